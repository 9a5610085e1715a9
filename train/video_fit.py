"""`tiffin train video` as a Python function: data checks, then the shared run folder and Trainer.

Besides the run folder of train/run_folder.py, a video run writes confusion_matrix.png.
Imports Lightning (through run_folder): the CLI imports this module only inside its command.
Call `train_video(VideoTrainConfig(...))`, or run `tiffin train video --help`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiffin.errors import TiffinError
from tiffin.spec import VideoSpec
from tiffin.train.backbones import get_video_backbone
from tiffin.train.run_folder import (
    LoaderPair, MetricsWriter, RunOptions, build_trainer, fit, prepare_out, read_checkpoint, resumed_epoch, say,
)


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


@dataclass
class RunResult:
    """What a finished run produced."""

    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict[str, Any]


def make_spec(cfg: VideoTrainConfig, labels: list[str]) -> VideoSpec:
    """The clip spec of a run: the backbone's zoo settings, overridden by the options."""
    info = get_video_backbone(cfg.backbone)
    crop = cfg.crop_size or info.crop
    return VideoSpec(
        num_frames=cfg.num_frames or info.frames,
        clip_duration=cfg.clip_duration or info.clip_duration,
        side_size=round(crop * info.side / info.crop),
        crop_size=crop,
        slowfast_alpha=info.slowfast_alpha,
        labels=tuple(labels),
    )


def _gather(cfg: VideoTrainConfig):
    from tiffin.train.video_data import check_classes, discover_folder, drop_duplicates, probe_all, read_csv, stratified_split
    from tiffin.train.video_layouts import is_kinetics_csv, read_kinetics, read_split_layout

    if (cfg.train_folder is None) == (cfg.train_csv is None):
        raise TiffinError("give exactly one of --train-folder DIR or --train-csv FILE")
    if cfg.val_folder is not None and cfg.val_csv is not None:
        raise TiffinError("give at most one of --val-folder DIR or --val-csv FILE")
    train_opt = "--train-folder" if cfg.train_folder else "--train-csv"
    layout = read_split_layout(cfg.train_folder, cfg.split) if cfg.train_folder else None
    val, missing = None, []  # listed by a layout's or Kinetics' lists, not on disk
    if cfg.train_csv is not None and is_kinetics_csv(cfg.train_csv):
        kinetics = read_kinetics(cfg.train_csv, "--train-csv", cfg.video_root)
        train = kinetics.train
        say(f"--train-csv {cfg.train_csv}: Kinetics annotations, {len(train)} of {len(train) + len(kinetics.missing)} "
            f"clips found")
        _say_missing(kinetics.missing, "annotated clip(s) were not downloaded")
        missing += kinetics.missing
        if not train:
            raise TiffinError(f"--train-csv {cfg.train_csv}: none of its clips is on disk; give --video-root DIR "
                              "(the folder of <youtube_id>_<start>_<end> files)")
    elif layout is not None:
        train = layout.train
        say(f"--train-folder {cfg.train_folder}: {layout.summary(cfg.split)}")
        _say_missing(layout.missing, "video(s) its split files list are not in the folder")
        missing += layout.missing
        if cfg.val_folder is None and cfg.val_csv is None:
            val = layout.test
            say(f"validating on the layout's own split: {layout.held_out(cfg.split)}")
    else:
        train = discover_folder(cfg.train_folder, train_opt) if cfg.train_folder else read_csv(cfg.train_csv, train_opt)
    if cfg.val_folder is not None:
        val = discover_folder(cfg.val_folder, "--val-folder")
    elif cfg.val_csv is not None and is_kinetics_csv(cfg.val_csv):
        kinetics = read_kinetics(cfg.val_csv, "--val-csv", cfg.video_root)
        _say_missing(kinetics.missing, "annotated validation clip(s) were not downloaded")
        missing += kinetics.missing
        val = kinetics.train
    elif cfg.val_csv is not None:
        val = read_csv(cfg.val_csv, "--val-csv")
    train, dropped = drop_duplicates(train, train_opt)
    if val is not None:
        val, dropped_val = drop_duplicates(val, "--val-folder" if cfg.val_folder else "--val-csv")
        dropped += dropped_val
    if dropped:
        say(f"ignored {dropped} repeated mention(s) of the same file")
    labels = check_classes(train, train_opt)
    if val is not None:
        extra = sorted({s.label for s in val} - set(labels))
        if extra:
            raise TiffinError(f"validation classes {extra} do not occur in {train_opt}; every class needs training videos")
    say(f"probing {len(train) + len(val or [])} videos ...")
    clip = cfg.clip_duration or get_video_backbone(cfg.backbone).clip_duration
    train_videos, bad = probe_all(train, cfg.strict, clip, f"{train_opt} {cfg.train_folder or cfg.train_csv}")
    val_source = f"--val-folder {cfg.val_folder}" if cfg.val_folder else f"--val-csv {cfg.val_csv}"
    val_videos, bad_val = probe_all(val, cfg.strict, clip, val_source) if val is not None else (None, [])
    bad += bad_val
    for line in bad.lines("video"):  # the first few and counts: a million bad rows print a dozen lines
        say(line, prefix="[yellow]skipped[/] ")
    say_truncated(train_videos + (val_videos or []))
    lost = sorted(set(labels) - {v.label for v in train_videos})
    if lost:
        raise TiffinError(f"class {lost[0]!r} has no readable training videos; fix or remove its files")
    if val_videos is None:
        if not 0 < cfg.val_split < 1:
            raise TiffinError(f"--val-split {cfg.val_split}: give a fraction between 0 and 1, or --val-folder")
        train_videos, val_videos = stratified_split(train_videos, cfg.val_split, cfg.seed)
    if not val_videos:
        raise TiffinError("no validation videos: give --val-folder, or at least 2 videos in a class to split off")
    return labels, train_videos, val_videos, bad, missing


def truncated(videos: list) -> list[dict[str, Any]]:
    """The videos cut short of their headers, with both spans (metrics.json's truncated_files)."""
    return [{"path": str(v.path), "readable_s": round(v.duration + v.start, 3), "declared_s": round(v.declared, 3)}
            for v in videos if v.declared is not None]


def say_truncated(videos: list) -> None:
    for cut in truncated(videos):
        say(f"{cut['path']}: truncated: only {cut['readable_s']:.2f} s of the {cut['declared_s']:.2f} s its header "
            "declares can be read; clips come from that part", prefix="[yellow]note[/] ")


def _say_missing(missing: list[str], what: str) -> None:
    if missing:
        shown = "; ".join(missing[:3])
        say(f"{len(missing)} {what} ({shown}{' ...' if len(missing) > 3 else ''})", prefix="[yellow]note[/] ")


def train_video(cfg: VideoTrainConfig) -> RunResult:
    """Fine-tune a video classifier and write the run folder.

    Raises:
        TiffinError: bad options or data, reported before training starts.
        MediaError: an unreadable video, with `strict`.
    """
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from tiffin.train.video_data import EpochShuffle, VideoClipDataset, collate_clips
    from tiffin.train.video_model import check_clip_size, find_pretrained_weights
    from tiffin.train.run_folder import FINETUNE_STRATEGIES
    from tiffin.train.video_task import VideoClassificationTask

    info = get_video_backbone(cfg.backbone)
    if cfg.strategy not in FINETUNE_STRATEGIES:
        raise TiffinError(f"--strategy {cfg.strategy}: choose one of {', '.join(FINETUNE_STRATEGIES)}")
    check_clip_size(info, cfg.num_frames or info.frames, cfg.crop_size or info.crop)
    out = prepare_out(cfg, f"video-{cfg.backbone}")
    last = out / "checkpoints" / "last.ckpt"
    init_weights = None
    if (cfg.pretrained or cfg.weights) and not cfg.resume:
        init_weights = find_pretrained_weights(info, cfg.weights)  # fail before probing a large folder
    labels, train_videos, val_videos, bad, missing = _gather(cfg)
    spec = make_spec(cfg, labels)
    first_epoch = 0
    if cfg.resume:
        checkpoint = read_checkpoint(last)
        saved, first_epoch = checkpoint["tiffin"], resumed_epoch(checkpoint)
        if list(saved["spec"]["labels"]) != labels:
            raise TiffinError(f"--resume: {last} was trained on classes {saved['spec']['labels']}, the data has {labels}")
        spec = VideoSpec.from_dict(saved["spec"])
    cut = truncated(train_videos + val_videos)
    say(f"{len(labels)} classes, {len(train_videos)} training and {len(val_videos)} validation videos"
         f"{f', {len(bad)} skipped' if bad else ''}{f', {len(cut)} truncated (their readable part used)' if cut else ''}"
         f"; clips of {spec.num_frames} frames over {spec.clip_duration}s "
         f"at {spec.crop_size}px")

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = VideoClassificationTask(
        backbone=cfg.backbone, spec=spec.to_dict(), strategy=cfg.strategy, unfreeze_epoch=cfg.unfreeze_epoch,
        learning_rate=cfg.learning_rate, init_weights=str(init_weights) if init_weights else None,
    )
    train_set = VideoClipDataset(train_videos, labels, spec, cfg.clip_sampler, cfg.clips_per_video, train=True,
                                 flip=cfg.flip, strict=cfg.strict, seed=cfg.seed)
    val_set = VideoClipDataset(val_videos, labels, spec, "constant_clips_per_video", 1, strict=cfg.strict)
    loader_args = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=collate_clips,
                       persistent_workers=cfg.num_workers > 0)
    data = LoaderPair(
        lambda trainer: DataLoader(train_set, sampler=EpochShuffle(len(train_set), cfg.seed, first_epoch),
                                   drop_last=len(train_set) > cfg.batch_size, **loader_args),
        lambda trainer: DataLoader(val_set, shuffle=False, **loader_args))

    base = {"task": "video-classification", "backbone": cfg.backbone, "labels": labels, "strategy": cfg.strategy,
            "precision": cfg.precision, "train_videos": len(train_videos), "val_videos": len(val_videos),
            "skipped_files": [{"path": e.path, "reason": e.reason} for e in bad],  # the first KEPT
            "skipped": bad.summary(),
            "truncated_files": cut, "listed_missing": len(missing),
            "confusion_matrix_png": "confusion_matrix.png"}
    writer = MetricsWriter(out, cfg.resume, base, ("val_loss", "val_acc", "val_acc_top5"), "val_acc", "max")
    steps_per_epoch = max(1, len(train_set) // cfg.batch_size)
    trainer = build_trainer(cfg, out, "val_acc", "max", [writer], steps_per_epoch)
    metrics = fit(trainer, task, writer, data, out, cfg.resume)
    best = metrics["best"]
    if trainer.is_global_zero and best:
        save_confusion_png(best["confusion"], labels, out / "confusion_matrix.png",
                           f"validation, epoch {best['epoch']} (val_acc {best['val_acc']:.3f})")
    if bad:
        say(f"{len(bad)} unreadable video(s) were skipped; see skipped_files in {out / 'metrics.json'}",
            prefix="[yellow]note[/] ")
    if trainer.is_global_zero and metrics.get("val_acc") is not None:
        say(f"val_acc {metrics['val_acc']:.3f} (best {metrics['best_val_acc']:.3f} at epoch {metrics['best_epoch']}), "
            f"val_acc_top5 {metrics['val_acc_top5']:.3f}; run in {out}")
    return RunResult(out, out / "checkpoints" / "best.ckpt", last, metrics)


def save_confusion_png(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    """Draw a confusion matrix (rows: true class, columns: predicted) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(2 + 0.6 * n, 1.5 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
