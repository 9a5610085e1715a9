"""The one table of export formats: name -> file, precisions, exporter, runner.

Validation, export, `tiffin check`, prediction from artifacts and (later) benchmarks all read
this table; a new format is one module plus one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from export.onnx_format import OnnxRunner, export_onnx
from export.torchscript_format import TorchScriptRunner, export_mobile, export_torchscript
from tiffin.artifact import MODEL_FILES


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
        Format("onnx", MODEL_FILES["onnx"], ("fp32", "fp16", "int8"), export_onnx, OnnxRunner, uses_opset=True),
        Format("torchscript", MODEL_FILES["torchscript"], ("fp32", "bf16"), export_torchscript, TorchScriptRunner),
        Format("mobile", MODEL_FILES["mobile"], ("fp32",), export_mobile, TorchScriptRunner),
    ]
}
