"""Prediction from a training checkpoint: rebuild the network from the checkpoint alone.

A video's label scores are the mean of the softmax over `clips` clips spread evenly over the
whole video, each decoded and centre-cropped exactly as in validation.
Run: `tiffin predict runs/NAME/checkpoints/best.ckpt video.mp4 --top-k 5`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tiffin.errors import MediaError, TiffinError
from tiffin.spec import VideoSpec
from tiffin.video_io import center_crop, decode_clip, evenly_spaced_starts, probe
from train.run_folder import read_checkpoint
from train.video_model import VideoNet, build_video_net


@dataclass
class LoadedVideoModel:
    """A network in eval mode with the spec it was trained with."""

    net: VideoNet
    spec: VideoSpec
    backbone: str


def load_video_model(path: str | Path) -> LoadedVideoModel:
    """Rebuild a video classifier from a checkpoint (no pretrained weights are read)."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint["tiffin"]
    if meta.get("task") != "video-classification":
        raise TiffinError(f"{path}: is a {meta.get('task')} checkpoint, not video-classification")
    spec = VideoSpec.from_dict(meta["spec"])
    net = build_video_net(meta["backbone"], spec)
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    return LoadedVideoModel(net.eval(), spec, meta["backbone"])


def video_clips(path: str | Path, spec: VideoSpec, clips: int) -> np.ndarray:
    """`clips` centre-cropped clips spread over the whole video: uint8 [N, T, S, S, 3]."""
    duration = probe(path).duration
    starts = evenly_spaced_starts(duration, spec.clip_duration, clips)
    return np.stack([
        center_crop(decode_clip(path, s, spec.clip_duration, spec.num_frames, spec.side_size), spec.crop_size)
        for s in starts
    ])


@torch.inference_mode()
def classify_videos(model: LoadedVideoModel, files: list[str | Path], top_k: int = 5, clips: int = 1
                    ) -> list[dict[str, Any]]:
    """Top-k labels per file; a file that cannot be read gets an `error` entry instead.

    Returns:
        `[{"file": ..., "labels": [{"label": ..., "score": ...}, ...]}]` in the order given.
    """
    labels = model.spec.labels
    k = max(1, min(top_k, len(labels)))
    results = []
    for file in files:
        try:
            batch = torch.from_numpy(video_clips(file, model.spec, clips))
        except MediaError as err:
            results.append({"file": str(file), "error": err.reason})
            continue
        probs = torch.softmax(model.net(batch).float(), dim=-1).mean(0)
        scores, idx = probs.topk(k)
        results.append({"file": str(file), "labels": [
            {"label": labels[i], "score": round(float(s), 6)} for s, i in zip(scores.tolist(), idx.tolist())
        ]})
    return results
