"""`tiffin train video` through the Python API: its options become a VideoClassificationData, a
VideoClassifier and a tiffin.Trainer keeping the run folder --out (train/run_folder.py), as a
Python user would write them. Imports Lightning: the CLI imports this module only inside its
command. Call `train_video(VideoTrainConfig(...))`, or run `tiffin train video --help`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tiffin.errors import TiffinError
from tiffin.train.run_options import RunOptions, RunResult, prepare_out, resumed_model, run


@dataclass
class VideoTrainConfig(RunOptions):
    """Every option of `tiffin train video`; defaults come from the backbone where None."""

    train_folder: Path | None = None
    train_csv: Path | None = None
    val_folder: Path | None = None
    val_csv: Path | None = None
    val_split: float = 0.2
    backbone: str = "slowfast_r50"
    pretrained: bool = True
    weights: Path | None = None
    clip_duration: float | None = None
    clip_sampler: str = "random"
    clips_per_video: int = 2
    num_frames: int | None = None
    crop_size: int | None = None
    flip: bool = True
    split: int = 1  # which of a layout's splits (UCF101, HMDB51: 1-3)
    video_root: Path | None = None  # where a Kinetics CSV's clips are (default: beside it)


def video_data(cfg: VideoTrainConfig, clip_duration: float):
    """The data module of the options: one training source, at most one validation source."""
    from tiffin.train.video_datamodule import VideoClassificationData, list_csv, list_folder

    if (cfg.train_folder is None) == (cfg.train_csv is None):
        raise TiffinError("give exactly one of --train-folder DIR or --train-csv FILE")
    if cfg.val_folder is not None and cfg.val_csv is not None:
        raise TiffinError("give at most one of --val-folder DIR or --val-csv FILE")
    if cfg.train_folder is not None:
        origin = {"train": f"--train-folder {cfg.train_folder}"}
        train = list_folder(cfg.train_folder, "--train-folder", cfg.split)
    else:
        origin = {"train": f"--train-csv {cfg.train_csv}"}
        train = list_csv(cfg.train_csv, "--train-csv", cfg.video_root)
    val = None
    if cfg.val_folder is not None:
        origin["val"], val = f"--val-folder {cfg.val_folder}", list_folder(cfg.val_folder, "--val-folder", train=False)
    elif cfg.val_csv is not None:
        origin["val"], val = f"--val-csv {cfg.val_csv}", list_csv(cfg.val_csv, "--val-csv", cfg.video_root)
    if val is None and train.held_out is None and not 0 < cfg.val_split < 1:
        raise TiffinError(f"--val-split {cfg.val_split}: give a fraction between 0 and 1, or --val-folder")
    return VideoClassificationData(
        train, val, clip_sampler=cfg.clip_sampler, clip_duration=clip_duration, clips_per_video=cfg.clips_per_video,
        batch_size=cfg.batch_size, num_workers=cfg.num_workers, val_split=cfg.val_split, flip=cfg.flip,
        strict=cfg.strict, seed=cfg.seed, origin=origin)


def train_video(cfg: VideoTrainConfig) -> RunResult:
    """Fine-tune a video classifier and write the run folder.

    Raises:
        TiffinError: bad options or data, reported before training starts.
        MediaError: an unreadable video, with `strict`.
    """
    import pytorch_lightning as pl

    from tiffin.train.video_lookup import get_video_backbone
    from tiffin.train.finetuning import FINETUNE_STRATEGIES
    from tiffin.train.video_model import check_clip_size, find_pretrained_weights
    from tiffin.video import VideoClassifier

    info = get_video_backbone(cfg.backbone)
    if cfg.strategy not in FINETUNE_STRATEGIES:
        raise TiffinError(f"--strategy {cfg.strategy}: choose one of {', '.join(FINETUNE_STRATEGIES)}")
    check_clip_size(info, cfg.num_frames or info.frames, cfg.crop_size or info.crop)
    out = prepare_out(cfg, f"video-{cfg.backbone}")
    if (cfg.pretrained or cfg.weights) and not cfg.resume:
        find_pretrained_weights(info, cfg.weights)  # fail before probing a large folder
    data = video_data(cfg, cfg.clip_duration or info.clip_duration)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before the model: a new head's init is seeded
    if cfg.resume:
        model = resumed_model(VideoClassifier, out)
    else:
        model = VideoClassifier(
            backbone=cfg.backbone, labels=data.labels, pretrained=cfg.pretrained, weights=cfg.weights,
            num_frames=cfg.num_frames, crop_size=cfg.crop_size, clip_duration=cfg.clip_duration,
            learning_rate=cfg.learning_rate, strategy=cfg.strategy, unfreeze_epoch=cfg.unfreeze_epoch)
    return run(cfg, out, model, data, len(data.videos["train"]))
