"""What every `tiffin train` command shares: its run options, the run folder it names, the
tiffin.Trainer they make. The commands build the Python API's objects from their options
(train/video_fit.py, train/speech_fit.py); the run folder itself is tiffin.Trainer's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiffin.console import is_rank_zero
from tiffin.errors import TiffinError


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


@dataclass
class RunResult:
    """What a finished run produced."""

    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict[str, Any]
    hf_dir: Path | None = None  # speech: the best model in Hugging Face format


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


def resumed_model(cls: type, out: Path) -> Any:
    """The model of the run in `out` as its last checkpoint's hyperparameters rebuild it (no
    pretrained weights loaded: the checkpoint's replace them when the fit resumes)."""
    from tiffin.train.checkpoints import read_checkpoint

    return cls(**read_checkpoint(out / "checkpoints" / "last.ckpt")["hyper_parameters"])


def run(opts: RunOptions, out: Path, model: Any, data: Any, training_items: int) -> RunResult:
    """Fine-tune `model` on `data` with a tiffin.Trainer keeping the run folder `out`."""
    from pytorch_lightning.callbacks import RichProgressBar

    from tiffin.train.run_folder import distributed_strategy
    from tiffin.trainer import Trainer

    devices: int | str = int(opts.devices) if str(opts.devices).isdigit() else opts.devices
    steps_per_epoch = max(1, training_items // opts.batch_size)  # full batches: training drops the last partial one
    trainer = Trainer(
        max_epochs=opts.max_epochs, max_steps=opts.max_steps, precision=opts.precision, accelerator=opts.accelerator,
        devices=devices, num_nodes=opts.num_nodes, strategy=distributed_strategy(opts.distributed, opts.strategy),
        callbacks=[RichProgressBar()] if opts.progress else [], enable_progress_bar=opts.progress,
        enable_model_summary=False, log_every_n_steps=max(1, min(50, steps_per_epoch)), default_root_dir=out)
    trainer.finetune(model, datamodule=data, strategy=opts.strategy, ckpt_path="last" if opts.resume else None)
    checkpoints = out / "checkpoints"
    return RunResult(out, checkpoints / "best.ckpt", checkpoints / "last.ckpt", trainer.run_metrics or {},
                     out / "hf" if (out / "hf").is_dir() else None)
