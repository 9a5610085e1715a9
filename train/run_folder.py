"""What every training recipe shares: run options, the run folder, the Trainer, metrics.json.

A run folder OUT holds checkpoints/best.ckpt and last.ckpt (self-describing: a `tiffin`
entry with task, backbone and spec), metrics.json (final and per-epoch figures, rewritten
after every epoch), and logs/version_N/ (CSV + TensorBoard, one version per session).
Used by `tiffin train video` and `tiffin train speech`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins import TorchCheckpointIO
from rich.console import Console

from tiffin.errors import TiffinError

# soft_wrap: paths stay whole on one line; highlight off: no colours guessed from file names.
console = Console(stderr=True, soft_wrap=True, highlight=False)


FINETUNE_STRATEGIES = ("no_freeze", "freeze", "freeze_unfreeze")


def backbone_frozen(strategy: str, epoch: int, unfreeze_epoch: int) -> bool:
    """Whether a fine-tuning strategy keeps the pretrained backbone frozen during `epoch`.

    Derived from the epoch alone, so a resumed run picks the strategy up exactly.
    """
    return strategy == "freeze" or (strategy == "freeze_unfreeze" and epoch < unfreeze_epoch)


def params_outside(module: torch.nn.Module, head: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of `module` that are not the new head's: the pretrained backbone."""
    own = {id(p) for p in head.parameters()}
    return [p for p in module.parameters() if id(p) not in own]


@dataclass
class RunOptions:
    """Options of every `tiffin train` command that are about the run, not the model."""

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


def is_rank_zero() -> bool:
    """True on the global-zero process (and before any launcher has started others)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def say(message: str, prefix: str = "") -> None:
    """Print a line on the global-zero process only; `message` is plain text, `prefix` markup."""
    from rich.markup import escape

    if is_rank_zero():
        console.print(prefix + escape(message))


def prepare_out(opts: RunOptions, default_name: str) -> Path:
    """The run folder; refuses to overwrite a run unless resuming it.

    Raises:
        TiffinError: --resume without a last.ckpt, or an existing run without --resume.
    """
    out = Path(opts.out) if opts.out else Path("runs") / f"{default_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    last = out / "checkpoints" / "last.ckpt"
    if opts.resume:
        if not last.is_file():
            raise TiffinError(f"--resume: {last} does not exist; start a new run without --resume")
    elif out.exists() and any(out.iterdir()) and is_rank_zero():
        raise TiffinError(f"--out {out}: already holds a run; pass --resume to continue it or choose another --out")
    return out


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a tiffin checkpoint with `weights_only=True`: no code in the file runs.

    Raises:
        TiffinError: missing, corrupt, not a tiffin checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise TiffinError(f"{path}: no such checkpoint; give a .ckpt written by `tiffin train`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, corrupt or pickled files
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise TiffinError(f"{path}: not a readable checkpoint ({reason}); give a .ckpt written by `tiffin train` "
                          "or Trainer.save_checkpoint") from None
    if not isinstance(checkpoint, dict) or "tiffin" not in checkpoint or "state_dict" not in checkpoint:
        raise TiffinError(f"{path}: not a tiffin checkpoint; give a .ckpt written by `tiffin train`")
    return checkpoint


def _distributed_strategy(name: str, finetune: str) -> str:
    """DDP registers every parameter when it wraps the model; frozen ones then get no gradient,
    which plain DDP treats as an error. Freezing strategies need its find-unused-parameters mode."""
    from pytorch_lightning.strategies import StrategyRegistry

    unused = f"{name}_find_unused_parameters_true"
    if finetune != "no_freeze" and unused in StrategyRegistry.available_strategies():
        return unused
    return name


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside the target, then renamed over it.

    Lightning 2.6 writes through an fsspec transaction: a temporary file in the system temp
    folder, then a move. When that folder is on another filesystem (a tmpfs /tmp, containers)
    the move is a copy into the target, and a run killed mid-copy leaves a truncated last.ckpt
    and nothing to --resume from. A rename within the run folder is atomic: the previous
    checkpoint stays whole until the new one is complete.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        for stale in path.parent.glob(f".{path.name}.partial-*"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def build_trainer(opts: RunOptions, out: Path, monitor: str, mode: str, callbacks: list[Callback],
                  steps_per_epoch: int, use_distributed_sampler: bool = True) -> pl.Trainer:
    """A Trainer writing best.ckpt (by `monitor`), last.ckpt and versioned logs into `out`.

    Raises:
        TiffinError: trainer options Lightning cannot honour on this machine.
    """
    # One log folder per session (a resumed run adds version_1, ...): Lightning's loggers would
    # otherwise overwrite the earlier session's files.
    version = f"version_{len(list((out / 'logs').glob('version_*')))}"
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=monitor, mode=mode,
                                 save_top_k=1, save_last=True, enable_version_counter=False)
    callbacks = [checkpoint, ResumableRandomness(opts.seed), *callbacks] + ([RichProgressBar()] if opts.progress else [])
    devices: int | str = int(opts.devices) if str(opts.devices).isdigit() else opts.devices
    try:
        return pl.Trainer(
            max_epochs=opts.max_epochs, max_steps=opts.max_steps, precision=opts.precision,
            accelerator=opts.accelerator, devices=devices, num_nodes=opts.num_nodes,
            strategy=_distributed_strategy(opts.distributed, opts.strategy), callbacks=callbacks,
            enable_progress_bar=opts.progress, enable_model_summary=False, gradient_clip_val=1.0,
            logger=[CSVLogger(out, name="logs", version=version), TensorBoardLogger(out, name="logs", version=version)],
            log_every_n_steps=max(1, min(50, steps_per_epoch)), use_distributed_sampler=use_distributed_sampler,
            # sharded strategies (FSDP, DeepSpeed) write checkpoints their own way
            plugins=[] if opts.distributed.startswith(("fsdp", "deepspeed")) else [AtomicCheckpointIO()],
        )
    except (MisconfigurationException, ValueError) as exc:
        # --devices/--accelerator/--precision/--num-nodes that Lightning cannot honour here
        raise TiffinError(f"Lightning refused the trainer options: {str(exc).splitlines()[0]}") from None


def resumed_epoch(checkpoint: dict[str, Any]) -> int:
    """The epoch a run resumed from `checkpoint` starts with. Samplers are built with it: Lightning
    primes a loader's first iterator before any epoch hook can set the epoch."""
    return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])


class ResumableRandomness(Callback):
    """Makes epoch N of a run killed and resumed draw what an uninterrupted run draws (Lightning
    restores no RNG state): samplers get the epoch at its start (Lightning sets it from counters
    that lag by one after a resume, and never on a batch sampler, so speech's length buckets
    served epoch 0's batches every epoch), and torch's RNG (dropout) is seeded from
    (seed, step, rank) before every step. Data augmentation draws from (seed, epoch, item) in
    the datasets themselves."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader
        for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(hash((self.seed, trainer.global_step, trainer.global_rank)) % 2**63)


class LoaderPair(pl.LightningDataModule):
    """Training and validation loaders, made when the Trainer asks (then its world size is known)."""

    def __init__(self, make_train, make_val):
        super().__init__()
        self.make_train, self.make_val = make_train, make_val

    def train_dataloader(self):
        return self.make_train(self.trainer)

    def val_dataloader(self):
        return self.make_val(self.trainer)


def finetune_optimizer(module: pl.LightningModule, head: list[torch.nn.Parameter], backbone: list[torch.nn.Parameter],
                       strategy: str, learning_rate: float, backbone_lr_scale: float, weight_decay: float):
    """AdamW over the new head and (unless `freeze`) the backbone, linear warm-up then cosine decay.

    Frozen parameters get no gradient and AdamW skips them (no weight decay either), so the
    backbone can sit in the optimizer from the start and `freeze_unfreeze` only flips requires_grad.
    """
    import math

    groups = [{"params": head, "lr": learning_rate}]
    if strategy != "freeze":
        scale = backbone_lr_scale if strategy == "freeze_unfreeze" else 1.0
        groups.append({"params": backbone, "lr": learning_rate * scale})
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    total = max(1, int(module.trainer.estimated_stepping_batches))
    warmup = min(max(1, total // 20), 100)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class MetricsWriter(Callback):
    """Keeps metrics.json current after every epoch.

    Per-epoch rows hold the training loss and the `keys` validation figures; `best` holds the
    best epoch by `monitor` with the module's `best_extras()` (e.g. a confusion matrix), kept
    for that epoch only. Only the global-zero process writes. A resumed run keeps the epochs
    before the resume point. The module sets `validated_epoch` when its validation finishes.
    """

    def __init__(self, out: Path, resume: bool, base: dict[str, Any], keys: tuple[str, ...], monitor: str, mode: str):
        self.path = out / "metrics.json"
        self.base, self.keys, self.monitor, self.mode = base, keys, monitor, mode
        self.epochs: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        if resume and self.path.is_file():
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
                 **{k: m.get(k) if validated else None for k in self.keys}}
        self.epochs = [e for e in self.epochs if e["epoch"] < index] + [epoch]
        value = epoch.get(self.monitor)
        improved = validated and value is not None and (
            self.best is None or (value > self.best[self.monitor] if self.mode == "max" else value < self.best[self.monitor]))
        if improved:
            self.best = {"epoch": index, self.monitor: value, **pl_module.best_extras()}
        if trainer.is_global_zero:
            self.write({})
        return improved

    def finish(self, trainer, seconds: float) -> dict[str, Any]:
        """Final figures: the last validated epoch's, the best epoch's, time and steps."""
        scored = [e for e in self.epochs if e.get(self.monitor) is not None]
        final: dict[str, Any] = {"train_seconds": round(seconds, 1), "epochs_run": len(self.epochs),
                                 "global_step": trainer.global_step}
        if scored:
            final.update({k: scored[-1][k] for k in self.keys})
        if self.best:
            final.update({f"best_{self.monitor}": self.best[self.monitor], "best_epoch": self.best["epoch"]})
        return final

    def document(self, final: dict[str, Any]) -> dict[str, Any]:
        return {**self.base, **final, "best": self.best, "epochs": self.epochs}

    def write(self, final: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.document(final), indent=2))
        os.replace(tmp, self.path)


def fit(trainer: pl.Trainer, task: pl.LightningModule, writer: MetricsWriter, data: pl.LightningDataModule,
        out: Path, resume: bool) -> dict[str, Any]:
    """Train (from last.ckpt when resuming), make sure the final weights were validated, write metrics."""
    started = time.time()
    trainer.fit(task, datamodule=data, ckpt_path=str(out / "checkpoints" / "last.ckpt") if resume else None)
    if writer.epochs and writer.epochs[-1].get(writer.monitor) is None:
        # --max-steps stopped inside an epoch, before its validation: validate the final weights so
        # the run still has its figures and a best.ckpt.
        trainer.validate(task, datamodule=data, verbose=False)
        if writer.record(trainer, task, epoch_index=writer.epochs[-1]["epoch"]):
            trainer.save_checkpoint(out / "checkpoints" / "best.ckpt")
    final = writer.finish(trainer, time.time() - started)
    if trainer.is_global_zero:
        writer.write(final)
    return writer.document(final)
