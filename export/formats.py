"""The one table of export formats: name -> file, precisions, exporter, runner.

Validation, export, `tiffin check`, prediction from artifacts and (later) benchmarks all read
this table; a new format is one module plus one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from export.onnx_format import OnnxRunner, export_onnx
from export.torchscript_format import TorchScriptRunner, export_mobile, export_torchscript


@dataclass(frozen=True)
class Format:
    name: str
    file: str
    precisions: tuple[str, ...]
    export: Callable
    runner: Callable
    uses_opset: bool = False


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format("onnx", "model.onnx", ("fp32", "fp16", "int8"), export_onnx, OnnxRunner, uses_opset=True),
        Format("torchscript", "model.pt", ("fp32", "bf16"), export_torchscript, TorchScriptRunner),
        Format("mobile", "model.ptl", ("fp32",), export_mobile, TorchScriptRunner),
    ]
}
