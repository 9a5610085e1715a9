"""`tiffin train video` as a Python function: data checks, Lightning Trainer, run folder.

Imports Lightning at the top: the CLI imports this module only inside its command.

A run folder OUT holds checkpoints/best.ckpt and last.ckpt (self-describing), metrics.json
(final and per-epoch figures), logs/ (CSV and TensorBoard) and confusion_matrix.png.
Call `train_video(VideoTrainConfig(...))`, or run `tiffin train video --help`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback
from rich.console import Console

from tiffin.errors import MediaError, TiffinError
from tiffin.spec import VideoSpec
from train.backbones import get_video_backbone

# soft_wrap: paths stay whole on one line; highlight off: no colours guessed from file names.
console = Console(stderr=True, soft_wrap=True, highlight=False)


@dataclass
class VideoTrainConfig:
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
    batch_size: int = 4
    max_epochs: int = 10
    max_steps: int = -1
    strategy: str = "no_freeze"
    unfreeze_epoch: int = 1
    learning_rate: float = 1e-3
    precision: str = "32"
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    distributed: str = "auto"
    num_workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    seed: int = 42
    out: Path | None = None
    resume: bool = False
    strict: bool = False
    progress: bool = True


@dataclass
class RunResult:
    """What a finished run produced."""

    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict[str, Any]


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def _say(message: str, prefix: str = "") -> None:
    """Print a line on the global-zero process only; `message` is plain text, `prefix` markup."""
    from rich.markup import escape

    if _is_rank_zero():
        console.print(prefix + escape(message))


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
    from train.video_data import check_classes, discover_folder, drop_duplicates, probe_all, read_csv, stratified_split

    if (cfg.train_folder is None) == (cfg.train_csv is None):
        raise TiffinError("give exactly one of --train-folder DIR or --train-csv FILE")
    if cfg.val_folder is not None and cfg.val_csv is not None:
        raise TiffinError("give at most one of --val-folder DIR or --val-csv FILE")
    train_opt = "--train-folder" if cfg.train_folder else "--train-csv"
    train = discover_folder(cfg.train_folder, train_opt) if cfg.train_folder else read_csv(cfg.train_csv, train_opt)
    val = None
    if cfg.val_folder is not None:
        val = discover_folder(cfg.val_folder, "--val-folder")
    elif cfg.val_csv is not None:
        val = read_csv(cfg.val_csv, "--val-csv")
    train, dropped = drop_duplicates(train, train_opt)
    if val is not None:
        val, dropped_val = drop_duplicates(val, "--val-folder" if cfg.val_folder else "--val-csv")
        dropped += dropped_val
    if dropped:
        _say(f"ignored {dropped} repeated mention(s) of the same file")
    labels = check_classes(train, train_opt)
    if val is not None:
        extra = sorted({s.label for s in val} - set(labels))
        if extra:
            raise TiffinError(f"validation classes {extra} do not occur in {train_opt}; every class needs training videos")
    _say(f"probing {len(train) + len(val or [])} videos ...")
    train_videos, bad = probe_all(train, cfg.strict)
    val_videos, bad_val = probe_all(val, cfg.strict) if val is not None else (None, [])
    bad += bad_val
    for err in bad:
        _say(str(err), prefix="[yellow]skipped[/] ")
    lost = sorted(set(labels) - {v.label for v in train_videos})
    if lost:
        raise TiffinError(f"class {lost[0]!r} has no readable training videos; fix or remove its files")
    if val_videos is None:
        if not 0 < cfg.val_split < 1:
            raise TiffinError(f"--val-split {cfg.val_split}: give a fraction between 0 and 1, or --val-folder")
        train_videos, val_videos = stratified_split(train_videos, cfg.val_split, cfg.seed)
    if not val_videos:
        raise TiffinError("no validation videos: give --val-folder, or at least 2 videos in a class to split off")
    return labels, train_videos, val_videos, bad


def _prepare_out(cfg: VideoTrainConfig) -> Path:
    out = Path(cfg.out) if cfg.out else Path("runs") / f"video-{cfg.backbone}-{time.strftime('%Y%m%d-%H%M%S')}"
    last = out / "checkpoints" / "last.ckpt"
    if cfg.resume:
        if not last.is_file():
            raise TiffinError(f"--resume: {last} does not exist; start a new run without --resume")
    elif out.exists() and any(out.iterdir()) and _is_rank_zero():
        raise TiffinError(f"--out {out}: already holds a run; pass --resume to continue it or choose another --out")
    return out


def train_video(cfg: VideoTrainConfig) -> RunResult:
    """Fine-tune a video classifier and write the run folder.

    Raises:
        TiffinError: bad options or data, reported before training starts.
        MediaError: an unreadable video, with `strict`.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
    from torch.utils.data import DataLoader

    from train.video_data import VideoClipDataset, collate_clips
    from train.video_model import check_clip_size, find_pretrained_weights
    from train.video_task import FINETUNE_STRATEGIES, VideoClassificationTask

    info = get_video_backbone(cfg.backbone)
    if cfg.strategy not in FINETUNE_STRATEGIES:
        raise TiffinError(f"--strategy {cfg.strategy}: choose one of {', '.join(FINETUNE_STRATEGIES)}")
    check_clip_size(info, cfg.num_frames or info.frames, cfg.crop_size or info.crop)
    out = _prepare_out(cfg)
    last = out / "checkpoints" / "last.ckpt"
    init_weights = None
    if (cfg.pretrained or cfg.weights) and not cfg.resume:
        init_weights = find_pretrained_weights(info, cfg.weights)  # fail before probing a large folder
    labels, train_videos, val_videos, bad = _gather(cfg)
    spec = make_spec(cfg, labels)
    if cfg.resume:
        saved = _load_tiffin_meta(last)
        if list(saved["spec"]["labels"]) != labels:
            raise TiffinError(f"--resume: {last} was trained on classes {saved['spec']['labels']}, the data has {labels}")
        spec = VideoSpec.from_dict(saved["spec"])
    _say(f"{len(labels)} classes, {len(train_videos)} training and {len(val_videos)} validation videos"
         f"{f', {len(bad)} skipped' if bad else ''}; clips of {spec.num_frames} frames over {spec.clip_duration}s "
         f"at {spec.crop_size}px")

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = VideoClassificationTask(
        backbone=cfg.backbone, spec=spec.to_dict(), strategy=cfg.strategy, unfreeze_epoch=cfg.unfreeze_epoch,
        learning_rate=cfg.learning_rate, init_weights=str(init_weights) if init_weights else None,
    )
    train_set = VideoClipDataset(train_videos, labels, spec, cfg.clip_sampler, cfg.clips_per_video, train=True,
                                 flip=cfg.flip, strict=cfg.strict)
    val_set = VideoClipDataset(val_videos, labels, spec, "constant_clips_per_video", 1, strict=cfg.strict)
    loader_args = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=collate_clips,
                       persistent_workers=cfg.num_workers > 0)
    train_loader = DataLoader(train_set, shuffle=True, drop_last=len(train_set) > cfg.batch_size, **loader_args)
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)

    # One log folder per session (a resumed run adds version_1, ...): Lightning's loggers would
    # otherwise overwrite the earlier session's files.
    version = f"version_{len(list((out / 'logs').glob('version_*')))}"
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val_acc", mode="max",
                                 save_top_k=1, save_last=True, enable_version_counter=False)
    writer = MetricsWriter(out, cfg, labels, len(train_videos), len(val_videos), bad)
    callbacks = [checkpoint, writer] + ([RichProgressBar()] if cfg.progress else [])
    try:
        trainer = pl.Trainer(
            max_epochs=cfg.max_epochs, max_steps=cfg.max_steps, precision=cfg.precision,
            accelerator=cfg.accelerator, devices=_devices(cfg.devices), num_nodes=cfg.num_nodes,
            strategy=_distributed_strategy(cfg.distributed, cfg.strategy), callbacks=callbacks, enable_progress_bar=cfg.progress,
            logger=[CSVLogger(out, name="logs", version=version), TensorBoardLogger(out, name="logs", version=version)],
            log_every_n_steps=max(1, min(50, len(train_loader))), gradient_clip_val=1.0,
            deterministic=False, enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError) as exc:
        # --devices/--accelerator/--precision/--num-nodes that Lightning cannot honour here
        raise TiffinError(f"Lightning refused the trainer options: {str(exc).splitlines()[0]}") from None
    started = time.time()
    trainer.fit(task, train_loader, val_loader, ckpt_path=str(last) if cfg.resume else None)
    if writer.epochs and writer.epochs[-1]["val_acc"] is None:
        # --max-steps stopped inside an epoch, before its validation: validate the final weights so
        # the run still has its figures and a best.ckpt.
        trainer.validate(task, val_loader, verbose=False)
        if writer.record(trainer, task, epoch_index=writer.epochs[-1]["epoch"]):
            trainer.save_checkpoint(out / "checkpoints" / "best.ckpt")
    metrics = writer.finish(trainer, time.time() - started)
    if bad:
        _say(f"{len(bad)} unreadable video(s) were skipped; see skipped_files in {out / 'metrics.json'}",
             prefix="[yellow]note[/] ")
    if trainer.is_global_zero and metrics.get("val_acc") is not None:
        _say(f"val_acc {metrics['val_acc']:.3f} (best {metrics['best_val_acc']:.3f} at epoch {metrics['best_epoch']}), "
             f"val_acc_top5 {metrics['val_acc_top5']:.3f}; run in {out}")
    return RunResult(out, out / "checkpoints" / "best.ckpt", last, metrics)


def _distributed_strategy(name: str, finetune: str) -> str:
    """DDP registers every parameter when it wraps the model; frozen ones then get no gradient,
    which plain DDP treats as an error. Freezing strategies need its find-unused-parameters mode."""
    from pytorch_lightning.strategies import StrategyRegistry

    unused = f"{name}_find_unused_parameters_true"
    if finetune != "no_freeze" and unused in StrategyRegistry.available_strategies():
        return unused
    return name


def _devices(value: str) -> int | str:
    return int(value) if str(value).isdigit() else value


def _load_tiffin_meta(path: Path) -> dict[str, Any]:
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TiffinError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:120]})") from None
    if "tiffin" not in checkpoint:
        raise TiffinError(f"{path}: not a tiffin checkpoint (no 'tiffin' entry)")
    return checkpoint["tiffin"]


class MetricsWriter(Callback):
    """Keeps metrics.json current after every epoch and draws the confusion matrix at the end.

    Per-epoch rows hold losses and accuracies; the confusion matrix is kept for the best epoch
    only (a 400-class matrix per epoch would bloat the file). Only the global-zero process
    writes. A resumed run keeps the epochs before the resume point.
    """

    def __init__(self, out: Path, cfg: VideoTrainConfig, labels: list[str], n_train: int, n_val: int,
                 bad: list[MediaError]):
        self.path = out / "metrics.json"
        self.labels = labels
        self.base = {
            "task": "video-classification", "backbone": cfg.backbone, "labels": labels,
            "strategy": cfg.strategy, "precision": cfg.precision,
            "train_videos": n_train, "val_videos": n_val,
            "skipped_files": [{"path": e.path, "reason": e.reason} for e in bad],
        }
        self.epochs: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # {"epoch", "val_acc", "confusion"}
        if cfg.resume and self.path.is_file():
            saved = json.loads(self.path.read_text())
            self.epochs, self.best = saved.get("epochs", []), saved.get("best")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.record(trainer, pl_module)

    def record(self, trainer, pl_module, epoch_index: int | None = None) -> bool:
        """Add (or complete) an epoch's row, the current one by default; True when it is a new best."""
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        validated = pl_module.validated_epoch == trainer.current_epoch
        index = trainer.current_epoch if epoch_index is None else epoch_index
        previous = next((e for e in self.epochs if e["epoch"] == index), {})
        epoch = {"epoch": index, "step": trainer.global_step,
                 "train_loss": m.get("train_loss_epoch", previous.get("train_loss")),
                 **{k: m.get(k) if validated else None for k in ("val_loss", "val_acc", "val_acc_top5")}}
        self.epochs = [e for e in self.epochs if e["epoch"] < index] + [epoch]
        improved = validated and (self.best is None or epoch["val_acc"] > self.best["val_acc"])
        if improved:
            self.best = {"epoch": epoch["epoch"], "val_acc": epoch["val_acc"], "confusion": pl_module.last_confusion}
        if trainer.is_global_zero:
            self._write({})
        return improved

    def finish(self, trainer, seconds: float) -> dict[str, Any]:
        scored = [e for e in self.epochs if e.get("val_acc") is not None]
        final: dict[str, Any] = {"train_seconds": round(seconds, 1), "epochs_run": len(self.epochs),
                                 "global_step": trainer.global_step}
        if scored:
            final.update(val_acc=scored[-1]["val_acc"], val_acc_top5=scored[-1]["val_acc_top5"],
                         val_loss=scored[-1]["val_loss"])
        if self.best:
            final.update(best_val_acc=self.best["val_acc"], best_epoch=self.best["epoch"])
            if trainer.is_global_zero:
                final["confusion_matrix_png"] = "confusion_matrix.png"
                save_confusion_png(self.best["confusion"], self.labels, self.path.parent / "confusion_matrix.png",
                                   f"validation, epoch {self.best['epoch']} (val_acc {self.best['val_acc']:.3f})")
        if trainer.is_global_zero:
            self._write(final)
        return self._document(final)

    def _document(self, final: dict[str, Any]) -> dict[str, Any]:
        return {**self.base, **final, "best": self.best, "epochs": self.epochs}

    def _write(self, final: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self._document(final), indent=2))
        os.replace(tmp, self.path)


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
