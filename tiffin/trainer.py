"""`tiffin.Trainer`: a Lightning Trainer with Lightning Flash's `finetune` and `predict(output=)`.

Everything a `pytorch_lightning.Trainer` takes works here (callbacks, loggers, strategies,
devices, precision); two defaults follow `tiffin train`: gradient clipping at 1.0 (a CTC
model from scratch needs it), and the data modules shard their own batches across processes
(`use_distributed_sampler=False`: speech batches are length buckets, which Lightning's
sampler would break). `save_checkpoint` writes the self-describing checkpoint `tiffin train`
writes: `tiffin predict`, `tiffin export` and `tiffin.load` read it.

Given a folder (`default_root_dir=D`, which `tiffin train --out D` passes), a fit keeps the
run folder `tiffin train` keeps there (train/run_folder.py): best/last checkpoints written
atomically, metrics.json, logs, the confusion matrix or the Hugging Face export, and an exact
resume with `finetune(..., ckpt_path="last")`. Without it, Lightning's defaults apply.

Example:
    >>> trainer = tiffin.Trainer(max_epochs=3, accelerator="gpu", devices=1, precision="16-mixed")
    >>> trainer.finetune(model, datamodule=dm, strategy=("freeze_unfreeze", 1))
    >>> trainer.predict(model, datamodule=predict_dm, output="labels")
    >>> tiffin.Trainer(max_epochs=3, default_root_dir="runs/mine").finetune(model, datamodule=dm)  # a run folder
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException

from tiffin.console import say
from tiffin.errors import TiffinError
from tiffin.train.finetuning import FINETUNE_STRATEGIES

OUTPUTS = {"video-classification": ("labels", "probabilities", "top_k"), "speech-recognition": ("transcripts",)}


def finetune_strategy(strategy: str | tuple[str, int]) -> tuple[str, int | None]:
    """("freeze_unfreeze", 2) -> ("freeze_unfreeze", 2); "freeze" -> ("freeze", None)."""
    if isinstance(strategy, (tuple, list)):
        if len(strategy) != 2 or strategy[0] != "freeze_unfreeze" or not isinstance(strategy[1], int) or strategy[1] < 0:
            raise TiffinError(f"strategy={strategy!r}: give ('freeze_unfreeze', EPOCH) with a whole EPOCH >= 0")
        return strategy[0], strategy[1]
    if strategy not in FINETUNE_STRATEGIES:
        raise TiffinError(f"strategy={strategy!r}: choose one of {', '.join(FINETUNE_STRATEGIES)}, "
                          "or ('freeze_unfreeze', EPOCH)")
    return strategy, None


class Trainer(pl.Trainer):
    """A `pytorch_lightning.Trainer` with `finetune` and tiffin's `predict`."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("gradient_clip_val", 1.0)
        kwargs.setdefault("use_distributed_sampler", False)
        _lightning1_spelling(kwargs)
        precision, accelerator = str(kwargs.get("precision", "32")), str(kwargs.get("accelerator", "auto"))
        if precision == "16-mixed" and (accelerator == "cpu" or (accelerator == "auto" and not _has_gpu())):
            # Lightning refuses fp16 AMP on a CPU; bf16 autocast is its CPU mixed precision
            say("precision='16-mixed' on a CPU runs as 'bf16-mixed' (fp16 autocast is GPU-only)",
                prefix="[yellow]note[/] ")
            kwargs["precision"] = "bf16-mixed"
        self.run_folder = None
        if kwargs.get("default_root_dir") is not None:  # the user chose a folder: keep a run there
            from tiffin.train.run_folder import RunFolder

            self.run_folder = RunFolder(kwargs["default_root_dir"], precision)
            kwargs = self.run_folder.trainer_kwargs(kwargs)
        try:
            super().__init__(*args, **kwargs)
        except (MisconfigurationException, ValueError) as exc:
            # devices/accelerator/precision/num_nodes that Lightning cannot honour on this machine
            raise TiffinError(f"Lightning refused the trainer options: {str(exc).splitlines()[0]}") from None

    @property
    def run_metrics(self) -> dict[str, Any] | None:
        """metrics.json of the last fit in a run folder (None without one)."""
        return self.run_folder.metrics if self.run_folder is not None else None

    def fit(self, model: pl.LightningModule, train_dataloaders: Any = None, val_dataloaders: Any = None,
            datamodule: pl.LightningDataModule | None = None, ckpt_path: str | Path | None = None, **kwargs: Any) -> None:
        """Lightning's `fit`; with a run folder (`default_root_dir=`) also its metrics.json and outputs,
        and `ckpt_path="last"` resumes the run there exactly."""
        if self.run_folder is None:
            return super().fit(model, train_dataloaders, val_dataloaders, datamodule=datamodule, ckpt_path=ckpt_path,
                               **kwargs)
        loaders = {k: v for k, v in (("train_dataloaders", train_dataloaders), ("val_dataloaders", val_dataloaders))
                   if v is not None}
        self.run_folder.fit(self, super().fit, model, datamodule, ckpt_path, **loaders, **kwargs)

    def finetune(self, model: pl.LightningModule, train_dataloaders: Any = None, val_dataloaders: Any = None,
                 datamodule: pl.LightningDataModule | None = None, strategy: str | tuple[str, int] = "no_freeze",
                 ckpt_path: str | Path | None = None) -> None:
        """`fit` with a fine-tuning strategy: "no_freeze" (everything trains), "freeze" (the new head
        only; the backbone and its BatchNorm statistics stay as loaded), "freeze_unfreeze" or
        ("freeze_unfreeze", EPOCH) (the head alone until EPOCH, default 1, then everything, the
        backbone at a tenth of the learning rate)."""
        name, epoch = finetune_strategy(strategy)
        model.hparams["strategy"] = name
        if epoch is not None:
            model.hparams["unfreeze_epoch"] = epoch
        ddp_kwargs = getattr(self.strategy, "_ddp_kwargs", None)
        if name != "no_freeze" and isinstance(ddp_kwargs, dict):
            # DDP registers every parameter when it wraps the model, and a frozen one then gets no
            # gradient, which plain DDP treats as an error: freezing needs find_unused_parameters
            ddp_kwargs["find_unused_parameters"] = True
        self.fit(model, train_dataloaders, val_dataloaders, datamodule=datamodule, ckpt_path=ckpt_path)

    def predict(self, model: pl.LightningModule | None = None, dataloaders: Any = None,
                datamodule: pl.LightningDataModule | None = None, output: str | None = None, top_k: int = 5,
                skip_bad_files: bool = False, **kwargs: Any) -> list[Any]:
        """Predictions for a data module's `predict_*` files, in their order, through the path
        `tiffin predict` takes (video: softmax averaged over `predict_clips` clips; speech: long
        recordings in windows):

        - `output="labels"` (video default): the top label per video;
        - `"probabilities"`: per video, the probability of every label, in `model.labels` order;
        - `"top_k"`: per video, `[{"label", "score"}]` of the `top_k` best;
        - `"transcripts"` (speech default): the transcript per recording.

        A file that cannot be read is a one-line TiffinError naming it (never a silent None among
        the answers); with `skip_bad_files=True` its place holds `{"file", "error"}` instead. With
        `dataloaders=`, or a data module that is not tiffin's, this is Lightning's own `predict`.
        """
        files = getattr(datamodule, "predict_files", None) if datamodule is not None else None
        if dataloaders is not None or model is None or not hasattr(model, "predictor") or (
                datamodule is not None and not hasattr(datamodule, "predict_files")):
            return super().predict(model, dataloaders, datamodule, **kwargs)
        if files is None:
            raise TiffinError("the data module has no files to predict: build one with predict_folder=, "
                              "predict_files= or predict_file=")
        from tiffin.spec import VideoSpec

        task = "video-classification" if isinstance(model.spec, VideoSpec) else "speech-recognition"
        output = output or OUTPUTS[task][0]
        if output not in OUTPUTS[task]:
            raise TiffinError(f"output={output!r}: a {task} model gives {', '.join(OUTPUTS[task])}")
        device = _root_device(self)
        model.to(device)
        clips = getattr(datamodule, "predict_clips", 1)
        top = len(model.spec.labels) if output == "probabilities" else top_k
        results = model.predict(files, top_k=top, clips=clips)
        bad = [r for r in results if "error" in r]
        if bad and not skip_bad_files:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise TiffinError(f"{bad[0]['file']}: {bad[0]['error']}{more}; fix or remove it, or pass "
                              "skip_bad_files=True to get {'file', 'error'} in its place")
        answers: list[Any] = []
        for r in results:
            if "error" in r:
                say(f"{r['file']}: {r['error']}", prefix="[yellow]not predicted[/] ")
                answers.append({"file": r["file"], "error": r["error"]})
            elif output == "transcripts":
                answers.append(r["text"])
            elif output == "labels":
                answers.append(r["labels"][0]["label"])
            elif output == "top_k":
                answers.append(r["labels"])
            else:
                scores = {x["label"]: x["score"] for x in r["labels"]}
                answers.append([scores[label] for label in model.spec.labels])
        return answers


def _lightning1_spelling(kwargs: dict[str, Any]) -> None:
    """Flash's chapters write `Trainer(gpus=N, precision=16)`, which Lightning 2 refuses: `gpus`
    becomes accelerator/devices (0: the CPU; -1: every GPU; a GPU count where there is none: the
    CPU, said), an integer 16 becomes "16-mixed"; each with a note of the Lightning 2 spelling."""
    if "gpus" in kwargs:
        gpus = kwargs.pop("gpus")
        count = _gpu_count()
        wanted = count if gpus in (-1, "-1") else int(gpus or 0)
        if wanted == 0 or count == 0:
            kwargs.setdefault("accelerator", "cpu")
            kwargs.setdefault("devices", "auto")
            where = "the CPU" + (" (no GPU here)" if gpus not in (0, "0", None) else "")
        else:
            kwargs.setdefault("accelerator", "gpu")
            kwargs.setdefault("devices", -1 if gpus in (-1, "-1") else wanted)
            where = f"{wanted} GPU(s)"
        say(f"gpus={gpus!r} is Lightning 1's spelling; running on {where} as accelerator="
            f"{kwargs['accelerator']!r}, devices={kwargs['devices']!r}", prefix="[yellow]note[/] ")
    if kwargs.get("precision") in (16, "16"):
        say("precision=16 is Lightning 1's spelling; Lightning 2 calls it '16-mixed'", prefix="[yellow]note[/] ")
        kwargs["precision"] = "16-mixed"


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _root_device(trainer: pl.Trainer):
    import torch

    try:
        return trainer.strategy.root_device
    except Exception:  # noqa: BLE001  a strategy not set up yet (DDP before launch): predict on the CPU
        return torch.device("cpu")
