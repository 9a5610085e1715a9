"""The run folder `tiffin.Trainer` keeps when it is given one (`default_root_dir=`, `tiffin train --out`).

OUT/checkpoints/best.ckpt (by the task's monitored figure) and last.ckpt, written atomically;
OUT/metrics.json, rewritten after every epoch: what the data module and the model report
(counts, skipped files, labels or vocabulary), per-epoch figures, the best epoch with the
task's extras, final figures; OUT/logs/version_N/ (CSV + TensorBoard, one version per
session); and what the task adds when the run ends (video: confusion_matrix.png; speech: hf/).
A resumed run (`ckpt_path="last"`, `tiffin train --resume`) continues exactly: every epoch
draws what an uninterrupted run draws. A logger or ModelCheckpoint the user passes is used
instead of tiffin's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins.io import CheckpointIO

from tiffin.console import say
from tiffin.errors import TiffinError
from tiffin.train.checkpoints import AtomicCheckpointIO, read_checkpoint, resumed_epoch


class RunCheckpoint(ModelCheckpoint):
    """best.ckpt by the figure the task monitors (its `run_monitor`, known once the model is),
    and last.ckpt."""

    def __init__(self, dirpath: Path):
        super().__init__(dirpath=dirpath, filename="best", save_top_k=1, save_last=True, enable_version_counter=False)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        monitor = getattr(pl_module, "run_monitor", None)
        # a fit without validation data keeps the latest weights as best.ckpt (nothing to monitor)
        validates = getattr(trainer.datamodule, "has_validation", True) if trainer.datamodule is not None else True
        if monitor is not None and self.monitor is None and validates:
            self.monitor, self.mode = monitor[0], monitor[1]
            self.kth_value = torch.tensor(torch.inf if self.mode == "min" else -torch.inf)
        super().setup(trainer, pl_module, stage)


class RunFolder:
    """What a Trainer given a folder adds: loggers, atomic checkpoints, exact resume, metrics.json."""

    def __init__(self, out: str | Path, precision: str):
        self.out = Path(out)
        self.precision = precision  # as asked: 16-mixed stays 16-mixed in metrics.json
        self.last = self.out / "checkpoints" / "last.ckpt"
        self.checkpoint: RunCheckpoint | None = None
        self.metrics: dict[str, Any] | None = None

    def trainer_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Lightning's arguments with the run folder's loggers, checkpoints and plugins, where the user gave none."""
        # One log folder per session (a resumed run adds version_1, ...): Lightning's loggers would
        # otherwise overwrite the earlier session's files.
        version = f"version_{len(list((self.out / 'logs').glob('version_*')))}"
        if kwargs.get("logger", True) is True:
            kwargs["logger"] = [CSVLogger(self.out, name="logs", version=version),
                                TensorBoardLogger(self.out, name="logs", version=version)]
        callbacks = kwargs.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if not any(isinstance(c, ModelCheckpoint) for c in callbacks) and kwargs.get("enable_checkpointing", True):
            self.checkpoint = RunCheckpoint(self.out / "checkpoints")
            callbacks.append(self.checkpoint)
        seed = int(os.environ.get("PL_GLOBAL_SEED", "0"))  # pl.seed_everything's
        kwargs["callbacks"] = [ResumableRandomness(seed), *callbacks]
        plugins = kwargs.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        # sharded strategies (FSDP, DeepSpeed) write checkpoints their own way
        if not str(kwargs.get("strategy", "auto")).startswith(("fsdp", "deepspeed")) and not any(
                isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return kwargs

    def resume_path(self, ckpt_path: str | Path | None) -> Path | None:
        """The checkpoint a fit resumes from (`"last"`: this folder's last.ckpt); refuses to start
        over a run that is there without resuming it.

        Raises:
            TiffinError: "last" with no last.ckpt yet, or a run in the folder and no ckpt_path.
        """
        if ckpt_path == "last":
            if not self.last.is_file():
                raise TiffinError(f"ckpt_path='last': {self.last} does not exist; start a new run without it")
            return self.last
        if ckpt_path is None and self.last.is_file() and self.metrics is None:
            raise TiffinError(f"default_root_dir {self.out}: already holds a run; pass ckpt_path='last' to continue "
                              "it or choose another folder")
        return Path(ckpt_path) if ckpt_path is not None else None

    def fit(self, trainer: pl.Trainer, fit: Callable[..., None], model: pl.LightningModule, datamodule: Any,
            ckpt_path: str | Path | None, **loaders: Any) -> dict[str, Any] | None:
        """Lightning's `fit` (from `ckpt_path` when resuming), keeping metrics.json and the run's outputs."""
        resume = self.resume_path(ckpt_path)
        monitor = getattr(model, "run_monitor", None)
        if monitor is None:  # not a tiffin task: Lightning's own fit, with the run folder's loggers
            fit(model, datamodule=datamodule, ckpt_path=resume, **loaders)
            return None
        if datamodule is not None and hasattr(datamodule, "first_epoch"):
            datamodule.first_epoch = resumed_epoch(read_checkpoint(resume)) if resume is not None else None

        def base() -> dict[str, Any]:
            report = datamodule.run_report() if hasattr(datamodule, "run_report") else {}
            return {**model.run_report(), "precision": self.precision, **report}

        name, mode, keys = monitor
        writer = MetricsWriter(self.out, resume is not None, base, keys, name, mode)
        # before the checkpoint: Lightning runs ModelCheckpoint last, and so must this list
        at = trainer.callbacks.index(self.checkpoint) if self.checkpoint in trainer.callbacks else len(trainer.callbacks)
        trainer.callbacks.insert(at, writer)
        started = time.time()
        try:
            fit(model, datamodule=datamodule, ckpt_path=resume, **loaders)
            if writer.epochs and writer.epochs[-1].get(writer.monitor) is None:
                # max_steps stopped inside an epoch, before its validation: validate the final
                # weights so the run still has its figures and a best.ckpt
                trainer.validate(model, datamodule=datamodule, verbose=False, **(
                    {"dataloaders": loaders["val_dataloaders"]} if loaders.get("val_dataloaders") is not None else {}))
                if writer.record(trainer, model, epoch_index=writer.epochs[-1]["epoch"]) and self.checkpoint:
                    trainer.save_checkpoint(self.out / "checkpoints" / "best.ckpt")
        finally:
            trainer.callbacks.remove(writer)
        final = writer.finish(trainer, time.time() - started)
        if trainer.is_global_zero:
            writer.write(final)
        self.metrics = writer.document(final)
        skipped = getattr(datamodule, "skipped", None)
        if skipped:  # a tiffin data module: its BadFiles, and the metrics.json key listing them
            say(f"{skipped.total} {datamodule.skipped_what} were skipped; see {datamodule.skipped_key} in "
                f"{self.out / 'metrics.json'}", prefix="[yellow]note[/] ")
        if trainer.is_global_zero and hasattr(model, "finish_run"):
            model.finish_run(self.out, self.metrics)
        return self.metrics


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


class MetricsWriter(Callback):
    """Keeps metrics.json current after every epoch.

    Per-epoch rows hold the training loss and the `keys` validation figures; `best` holds the
    best epoch by `monitor` with the module's `best_extras()` (e.g. a confusion matrix), kept
    for that epoch only. Only the global-zero process writes. A resumed run keeps the epochs
    before the resume point. The module sets `validated_epoch` when its validation finishes.
    `base()` gives the run's description (data counts, labels), asked at each write: a
    vocabulary learnt from the data is known only once training has set up.
    """

    def __init__(self, out: Path, resume: bool, base: Callable[[], dict[str, Any]], keys: tuple[str, ...],
                 monitor: str, mode: str):
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
        return {**self.base(), **final, "best": self.best, "epochs": self.epochs}

    def write(self, final: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.document(final), indent=2))
        os.replace(tmp, self.path)


def distributed_strategy(name: str, finetune: str) -> str:
    """DDP registers every parameter when it wraps the model; frozen ones then get no gradient,
    which plain DDP treats as an error. Freezing strategies need its find-unused-parameters mode."""
    from pytorch_lightning.strategies import StrategyRegistry

    unused = f"{name}_find_unused_parameters_true"
    if finetune != "no_freeze" and unused in StrategyRegistry.available_strategies():
        return unused
    return name
