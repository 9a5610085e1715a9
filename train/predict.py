"""Prediction from a training checkpoint: rebuild the network from the checkpoint alone.

Video: a video's label scores are the mean of the softmax over `clips` clips spread evenly over
the whole video, each decoded and centre-cropped exactly as in validation.
Speech: greedy CTC transcripts; long recordings run in overlapping windows.
Run: `tiffin predict runs/NAME/checkpoints/best.ckpt FILE...`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tiffin.errors import MediaError, TiffinError
from tiffin.spec import VideoSpec
from tiffin.inference import top_labels, video_clips
from train.backbones import EMBEDDED_MODELS
from train.run_folder import read_checkpoint
from train.video_model import VideoNet, build_video_net


@dataclass
class LoadedVideoModel:
    """A network in eval mode with the spec it was trained with."""

    net: VideoNet
    spec: VideoSpec
    backbone: str


def load_video_model(path: str | Path) -> LoadedVideoModel:
    """Rebuild a video classifier from a checkpoint (no pretrained weights are read), or load an
    embedded model by name (its pretraining classes)."""
    if str(path) in EMBEDDED_MODELS:
        from train.backbones import get_video_backbone
        from train.video_model import embedded_spec, load_embedded_net

        name = str(path)
        return LoadedVideoModel(load_embedded_net(name).eval(), embedded_spec(get_video_backbone(name)), name)
    checkpoint = read_checkpoint(path)
    meta = checkpoint["tiffin"]
    if meta.get("task") != "video-classification":
        raise TiffinError(f"{path}: is a {meta.get('task')} checkpoint, not video-classification")
    spec = VideoSpec.from_dict(meta["spec"])
    net = build_video_net(meta["backbone"], spec)
    net.load_state_dict(_net_state(checkpoint))
    return LoadedVideoModel(net.eval(), spec, meta["backbone"])


def _net_state(checkpoint: dict) -> dict:
    """The network's weights in a Lightning checkpoint (the task holds the network as `net`)."""
    return {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}


@torch.inference_mode()
def classify_videos(model: LoadedVideoModel, files: list[str | Path], top_k: int = 5, clips: int = 1
                    ) -> list[dict[str, Any]]:
    """Top-k labels per file; a file that cannot be read gets an `error` entry instead.

    Returns:
        `[{"file": ..., "labels": [{"label": ..., "score": ...}, ...]}]` in the order given.
    """
    results = []
    for file in files:
        try:
            batch = torch.from_numpy(video_clips(file, model.spec, clips))
        except MediaError as err:
            results.append({"file": str(file), "error": err.reason})
            continue
        results.append({"file": str(file), "labels": top_labels(model.net(batch).float().numpy(), model.spec.labels, top_k)})
    return results


@dataclass
class LoadedSpeechModel:
    """A speech network in eval mode with its spec (rate, normalisation, vocabulary)."""

    net: Any
    spec: Any
    backbone: str


def load_speech_model(path: str | Path) -> LoadedSpeechModel:
    """Rebuild a speech model from a tiffin checkpoint or a Hugging Face model folder (offline)."""
    from tiffin.spec import SpeechSpec
    from train.speech_model import SpeechNet, build_speech_net, feature_settings, load_backbone

    name = str(path)
    path = Path(path)
    if name in EMBEDDED_MODELS:
        model, vocab, _ = load_backbone(name, pretrained=True)
        spec = SpeechSpec(vocab=vocab.tokens)
        return LoadedSpeechModel(SpeechNet(model, spec).eval(), spec, name)
    if path.is_dir():
        model, vocab, _ = load_backbone(str(path), pretrained=True)
        if vocab is None:
            raise TiffinError(f"{path}: has no vocab.json; give a model folder with its tokenizer files")
        rate, normalize = feature_settings(path)
        spec = SpeechSpec(sample_rate=rate, normalize=normalize, vocab=vocab.tokens)
        return LoadedSpeechModel(SpeechNet(model, spec).eval(), spec, str(path))
    checkpoint = read_checkpoint(path)
    meta = checkpoint["tiffin"]
    if meta.get("task") != "speech-recognition":
        raise TiffinError(f"{path}: is a {meta.get('task')} checkpoint, not speech-recognition")
    spec = SpeechSpec.from_dict(meta["spec"])
    net = build_speech_net(meta["model_config"], spec)
    net.load_state_dict(_net_state(checkpoint))
    return LoadedSpeechModel(net.eval(), spec, meta["backbone"])


@torch.inference_mode()
def speech_logits(model: LoadedSpeechModel, wave: np.ndarray) -> np.ndarray:
    """CTC logits [frames, vocab] of a whole recording; long ones in overlapping windows
    (tiffin.chunking, shared with serving)."""
    from tiffin.chunking import chunked_logits
    from tiffin.inference import pad_to_one_frame

    spec, net = model.spec, model.net
    wave = pad_to_one_frame(wave, net.kernels, net.strides)

    def run(piece: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(piece))[None]
        return net(x, torch.tensor([len(piece)]))[0].float().numpy()

    return chunked_logits(run, wave, spec.sample_rate, int(np.prod(net.strides)), spec.chunk_seconds,
                          spec.stride_seconds)


def transcribe_files(model: LoadedSpeechModel, files: list[str | Path]) -> list[dict[str, Any]]:
    """Transcripts per file; a file that cannot be read gets an `error` entry instead.

    Returns:
        `[{"file": ..., "text": ..., "duration_s": ...}]` in the order given.
    """
    from tiffin.audio_io import load_audio
    from tiffin.ctc import Vocabulary

    vocab = Vocabulary(model.spec.vocab)
    results = []
    for file in files:
        try:
            wave = load_audio(file, model.spec.sample_rate)
        except MediaError as err:
            results.append({"file": str(file), "error": err.reason})
            continue
        text = vocab.decode_logits(speech_logits(model, wave))
        results.append({"file": str(file), "text": text, "duration_s": round(len(wave) / model.spec.sample_rate, 3)})
    return results


def model_task(path: str | Path) -> str:
    """'video-classification' or 'speech-recognition' for a checkpoint, an artifact, a Hugging Face
    folder or an embedded model's name."""
    if str(path) in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[str(path)]
    path = Path(path)
    if path.is_dir() and (path / "tiffin.json").is_file():
        return json.loads((path / "tiffin.json").read_text()).get("task", "")
    if path.is_dir():
        if (path / "config.json").is_file():
            return "speech-recognition"
        raise TiffinError(f"{path}: not a model folder (no config.json); give a .ckpt or a save_pretrained folder")
    if path.suffix != ".ckpt":
        raise TiffinError(f"{path}: give a .ckpt checkpoint written by `tiffin train` or a Hugging Face model folder")
    return read_checkpoint(path)["tiffin"].get("task", "video-classification")
