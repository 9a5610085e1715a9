"""CLI of the training stage: `tiffin train ...`, `tiffin backbones ...`, `tiffin synth ...`.

Commands parse options into the Python API's config and call it; heavy imports (torch,
Lightning) happen inside the commands so `tiffin --help` stays fast.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from tiffin.errors import TiffinError, reported

train_app = typer.Typer(help="Fine-tune models on your data.", no_args_is_help=True)
backbones_app = typer.Typer(help="List the supported backbones.", no_args_is_help=True)
synth_app = typer.Typer(help="Generate synthetic datasets to try tiffin on.", no_args_is_help=True)


class ClipSampler(str, Enum):
    random = "random"
    uniform = "uniform"
    constant_clips_per_video = "constant_clips_per_video"


class Precision(str, Enum):
    fp32 = "32"
    mixed16 = "16-mixed"
    bf16_mixed = "bf16-mixed"
    bf16_true = "bf16-true"


class Accelerator(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


def split_strategies(values: list[str]) -> tuple[str, str]:
    """Split `--strategy` values into (fine-tuning strategy, Lightning distributed strategy).

    `--strategy` takes both kinds, as Flash's `finetune(strategy=)` and Lightning's
    `Trainer(strategy=)` do: e.g. `--strategy freeze_unfreeze --strategy ddp` or `freeze,ddp`.
    """
    from pytorch_lightning.strategies import StrategyRegistry

    from train.run_folder import FINETUNE_STRATEGIES

    finetune, distributed = [], []
    for value in (v.strip() for item in values for v in item.split(",") if v.strip()):
        if value in FINETUNE_STRATEGIES:
            finetune.append(value)
        elif value == "auto" or value in StrategyRegistry.available_strategies():
            distributed.append(value)
        else:
            raise TiffinError(
                f"--strategy {value}: not a fine-tuning strategy ({', '.join(FINETUNE_STRATEGIES)}) "
                f"nor a Lightning one (ddp, ddp_spawn, fsdp, deepspeed, ...)"
            )
    if len(finetune) > 1 or len(distributed) > 1:
        raise TiffinError("--strategy: give at most one fine-tuning and one distributed strategy")
    return (finetune or ["no_freeze"])[0], (distributed or ["auto"])[0]


@train_app.command("video")
@reported
def train_video_command(
    train_folder: Path = typer.Option(None, help="Kinetics layout: DIR/<class>/<video>."),
    train_csv: Path = typer.Option(None, help="CSV (or TSV) with path,label columns; paths relative to the CSV."),
    val_folder: Path = typer.Option(None, help="Validation folder; without it a stratified split is held out."),
    val_csv: Path = typer.Option(None, help="Validation CSV with path,label columns."),
    val_split: float = typer.Option(0.2, help="Fraction of each class held out when no validation set is given."),
    backbone: str = typer.Option("slowfast_r50", help="See `tiffin backbones video`."),
    pretrained: bool = typer.Option(True, help="Start from the model zoo's Kinetics-400 weights."),
    weights: Path = typer.Option(None, help="Weights file to start from (a zoo .pyth or a state dict)."),
    clip_duration: float = typer.Option(None, help="Seconds per clip [default: the backbone's zoo clip]."),
    clip_sampler: ClipSampler = typer.Option(ClipSampler.random, help="How training clips are drawn."),
    clips_per_video: int = typer.Option(2, help="Clips per video for constant_clips_per_video."),
    num_frames: int = typer.Option(None, help="Frames per clip [default: the backbone's]."),
    crop_size: int = typer.Option(None, help="Square crop in pixels [default: the backbone's]."),
    flip: bool = typer.Option(True, help="Random horizontal flips; turn off when left/right matters."),
    batch_size: int = typer.Option(4, min=1),
    max_epochs: int = typer.Option(10, min=1),
    max_steps: int = typer.Option(-1, help="Stop after this many optimizer steps (-1: no limit)."),
    strategy: list[str] = typer.Option(
        ["no_freeze"], help="Fine-tuning: no_freeze|freeze|freeze_unfreeze; distributed: ddp|fsdp|... "
        "(repeat or comma-separate to give both)."),
    unfreeze_epoch: int = typer.Option(1, help="Epoch at which freeze_unfreeze unfreezes the backbone."),
    learning_rate: float = typer.Option(1e-3),
    precision: Precision = typer.Option(Precision.fp32, help="16-mixed becomes bf16-mixed on CPU."),
    accelerator: Accelerator = typer.Option(Accelerator.auto),
    devices: str = typer.Option("auto", help="auto or a number of devices (processes on CPU)."),
    num_nodes: int = typer.Option(1, min=1),
    num_workers: int = typer.Option(None, help="Data loading processes [default: min(4, CPUs)]."),
    seed: int = typer.Option(42),
    out: Path = typer.Option(None, help="Run folder [default: runs/video-BACKBONE-TIME]."),
    resume: bool = typer.Option(False, help="Continue the run in --out from checkpoints/last.ckpt."),
    strict: bool = typer.Option(False, help="Stop at the first unreadable video instead of skipping it."),
    progress: bool = typer.Option(True, help="Show the progress bar."),
) -> None:
    """Fine-tune a PyTorchVideo classifier on a folder or CSV of videos."""
    from train.video_fit import VideoTrainConfig, train_video

    finetune, distributed = split_strategies(strategy)
    cfg = VideoTrainConfig(
        train_folder=train_folder, train_csv=train_csv, val_folder=val_folder, val_csv=val_csv,
        val_split=val_split, backbone=backbone, pretrained=pretrained, weights=weights,
        clip_duration=clip_duration, clip_sampler=clip_sampler.value, clips_per_video=clips_per_video,
        num_frames=num_frames, crop_size=crop_size, flip=flip, batch_size=batch_size, max_epochs=max_epochs,
        max_steps=max_steps, strategy=finetune, unfreeze_epoch=unfreeze_epoch, learning_rate=learning_rate,
        precision=precision.value, accelerator=accelerator.value, devices=devices, num_nodes=num_nodes,
        distributed=distributed, seed=seed, out=out, resume=resume, strict=strict, progress=progress,
    )
    if num_workers is not None:
        cfg.num_workers = num_workers
    result = train_video(cfg)
    typer.echo(f"best checkpoint: {result.best_checkpoint}")


@backbones_app.command("video")
@reported
def backbones_video(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Video backbones with size, zoo input, cost, Kinetics-400 top-1 and where weights are looked up."""
    from rich.console import Console
    from rich.table import Table

    from train.backbones import VIDEO_BACKBONES, hub_checkpoint_dir

    rows = []
    for b in VIDEO_BACKBONES.values():
        weights = hub_checkpoint_dir() / b.weights_file
        rows.append({
            "name": b.name, "params": b.params, "frames": b.frames, "sampling_rate": b.sampling_rate,
            "clip_duration": b.clip_duration, "side": b.side, "crop": b.crop, "gflops_per_view": b.gflops,
            "kinetics400_top1": b.top1, "weights_path": str(weights), "weights_present": weights.is_file(),
            "weights_url": b.weights_url,
        })
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"video backbones (weights looked up in {hub_checkpoint_dir()})")
    table.add_column("name", no_wrap=True)
    for col in ("params", "frames x rate", "crop", "GFLOPs/view", "K400 top-1", "weights"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["name"], f"{r['params'] / 1e6:.1f}M", f"{r['frames']}x{r['sampling_rate']}", str(r["crop"]),
                      f"{r['gflops_per_view']:.2f}", f"{r['kinetics400_top1']:.2f}",
                      "cached" if r["weights_present"] else "missing")
    Console().print(table)


@synth_app.command("video")
@reported
def synth_video(
    out: Path = typer.Argument(..., help="Folder to write DIR/<class>/<video> into."),
    per_class: int = typer.Option(16, min=1, help="Videos per class."),
    seed: int = typer.Option(0),
    classes: str = typer.Option(None, help="Comma-separated subset of move_left,move_right,move_up,move_down."),
) -> None:
    """Write a synthetic motion dataset (shapes moving in four directions; mp4/avi/webm/mkv)."""
    from train.synthetic import make_motion_dataset

    try:
        clips = make_motion_dataset(out, per_class, seed, classes.split(",") if classes else None)
    except ValueError as err:
        raise TiffinError(f"--classes: {err}") from None
    typer.echo(f"wrote {len(clips)} videos in {len({c.label for c in clips})} classes to {out}")
