"""The one table of export formats: name -> file, precisions, exporter.

Export, `tiffin check`, the benchmark and the CLI's choices all read this table; the runtime
that runs each format's file is tiffin.runtimes' table. A new format is one module plus one row.
The exporters are imported when called, so reading the table (the CLI does) imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tiffin.artifact import MODEL_FILES


def _exporter(module: str, name: str) -> Callable:
    """The exporter `name` of tiffin.export.`module`, imported on the first call."""

    def export(*args, **kwargs):
        from importlib import import_module

        return getattr(import_module(f"tiffin.export.{module}"), name)(*args, **kwargs)

    export.__name__ = name
    return export


@dataclass(frozen=True)
class Format:
    name: str
    file: str
    precisions: tuple[str, ...]
    export: Callable
    uses_opset: bool = False


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format("onnx", MODEL_FILES["onnx"], ("fp32", "fp16", "int8"), _exporter("onnx_format", "export_onnx"),
               uses_opset=True),
        Format("torchscript", MODEL_FILES["torchscript"], ("fp32", "bf16"),
               _exporter("torchscript_format", "export_torchscript")),
        Format("mobile", MODEL_FILES["mobile"], ("fp32",), _exporter("torchscript_format", "export_mobile")),
        Format("pt2", MODEL_FILES["pt2"], ("fp32",), _exporter("pt2_format", "export_pt2")),
    ]
}
# every precision some format exports, in the table's order
PRECISIONS: tuple[str, ...] = tuple(dict.fromkeys(p for f in FORMATS.values() for p in f.precisions))
