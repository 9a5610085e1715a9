"""CLI of the export stage: `tiffin export` and `tiffin check` (heavy imports inside the commands)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from tiffin.errors import reported


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"
    mobile = "mobile"


class ExportPrecision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"


@reported
def export_command(
    model: Path = typer.Argument(..., help="A .ckpt written by `tiffin train`, a Hugging Face speech model folder, "
                                 "or an embedded model (tiffin/tiny-motion, tiffin/tiny-en)."),
    format: ExportFormat = typer.Option(ExportFormat.onnx, "--format"),
    precision: ExportPrecision = typer.Option(ExportPrecision.fp32, help="onnx: fp32|fp16|int8; torchscript: "
                                              "fp32|bf16; mobile: fp32."),
    opset: int = typer.Option(None, help="ONNX opset, 13..18 [default: 17]."),
    out: Path = typer.Option(None, help="Artifact folder [default: runs/NAME/export/FORMAT-PRECISION]."),
    check_data: Path = typer.Option(None, help="Real videos or recordings (a file or folder) to check parity on too."),
    calibration_data: Path = typer.Option(None, help="Videos to calibrate static int8 quantisation on (video int8)."),
    batch: str = typer.Option("dynamic", help="'dynamic' or a fixed batch size baked into the graph."),
    force: bool = typer.Option(False, help="Replace an existing artifact at --out."),
    as_json: bool = typer.Option(False, "--json", help="Print tiffin.json."),
) -> None:
    """Export a model to ONNX, TorchScript or mobile; refused (nothing written) unless it matches PyTorch."""
    from export.artifact import ExportOptions, export_model
    from tiffin.errors import TiffinError

    if batch != "dynamic" and not batch.isdigit():
        raise TiffinError(f"--batch {batch}: give 'dynamic' or a positive batch size")
    fixed = None if batch == "dynamic" else int(batch)
    out_dir, meta = export_model(ExportOptions(model, format.value, precision.value, opset, out, check_data,
                                               calibration_data, force, fixed))
    if as_json:
        typer.echo(json.dumps(meta, indent=2, ensure_ascii=False))
        return
    parity = meta["parity"]
    agreement = (f"top-1 agreement {parity['top1_agreement']:.0%}" if "top1_agreement" in parity
                 else f"transcript CER {parity['transcript_cer']:.3f}")
    typer.echo(f"{out_dir}: {meta['format']} {meta['precision']}, parity ok (max |diff| {parity['max_abs_diff']:.2e}, "
               f"{agreement} on {len(parity['samples'])} check batches)")


@reported
def check_command(
    artifact: Path = typer.Argument(..., help="An artifact folder written by `tiffin export`."),
    data: Path = typer.Option(None, help="Real videos or recordings to check on too."),
) -> None:
    """Re-run an artifact's parity check against the model it came from; exit 2 if it fails."""
    from export.artifact import check_artifact

    report = check_artifact(artifact, data)
    typer.echo(json.dumps(report, indent=2))
