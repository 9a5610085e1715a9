"""Which video backbone a name means: a row of the table (train/backbones.py), or a Hugging Face
video classifier (a Hub id, downloaded if missing, or a save_pretrained folder) described by its
own files (train/video_hf.py). Kept apart from the table so the table imports nothing."""

from __future__ import annotations

from pathlib import Path

from tiffin.train.backbones import VIDEO_BACKBONES, VideoBackbone, embedded_dir, hub_checkpoint_dir


def get_video_backbone(name: str) -> VideoBackbone:
    """Look a backbone up by name: a row of the table, or a Hugging Face video classifier (a Hub
    id, downloaded if missing, or a save_pretrained folder) described by its own files.

    Raises:
        TiffinError: unknown name, with the list of known ones.
    """
    from tiffin.errors import TiffinError
    from tiffin.train.weights import is_hub_id

    if name in VIDEO_BACKBONES:
        return VIDEO_BACKBONES[name]
    if is_hub_id(name) or Path(name).expanduser().is_dir():
        from tiffin.train.video_hf import describe

        return describe(name)
    raise TiffinError(f"--backbone {name!r} is not a video backbone; choose one of: {', '.join(VIDEO_BACKBONES)}, "
                      "or a Hugging Face video classifier (org/name or a save_pretrained folder)")


def video_backbone_details(name: str) -> dict:
    """Everything about one video backbone, as `tiffin backbones video --json` lists it and
    `VideoClassifier.get_backbone_details(name)` returns it: size, zoo input, cost, Kinetics-400
    top-1, where its weights come from and whether they are here, and its preprocessing.

    Raises:
        TiffinError: unknown name, with the list of known ones.
    """
    b = get_video_backbone(name)
    if b.family == "transformers":  # described by its own folder (a Hub snapshot or save_pretrained)
        weights = Path(b.weights_file)
    else:
        weights = embedded_dir(b.name) / b.weights_file if b.embedded else hub_checkpoint_dir() / b.weights_file
    return {
        "name": b.name, "zoo": b.family, "family": b.hub_fn.split("_")[0], "embedded": b.embedded,
        "params": b.params or None,
        "frames": b.frames, "sampling_rate": b.sampling_rate, "clip_duration": b.clip_duration, "side": b.side,
        "crop": b.crop, "gflops_per_view": b.gflops, "kinetics400_top1": None if b.embedded else b.top1,
        "weights_path": str(weights), "weights_present": weights.exists(),
        "weights_url": None if b.embedded or b.family == "transformers" else b.weights_url,
        "preprocessing": {"num_frames": b.frames, "clip_duration": b.clip_duration, "side_size": b.side,
                          "crop_size": b.crop, "mean": list(b.mean), "std": list(b.std),
                          "slowfast_alpha": b.slowfast_alpha},
    }
