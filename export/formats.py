"""The exporter of each format of the formats table (tiffin.artifact_formats.ARTIFACT_FORMATS).

The table itself (name, model file, precisions) is the contract's, so the schema and serving
read it without tiffin.export; this module gives each row its exporter. Export, `tiffin check`,
the benchmark and the CLI's choices all read FORMATS. An exporter takes (network, export spec,
path, precision, opset, metadata to embed, calibration=) and returns the tiffin.json fields it
adds (ONNX int8: `quantization`), never changing the metadata it was given. The exporters are
imported when called, so reading the table (the CLI does) imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tiffin.artifact_formats import ARTIFACT_FORMATS, PRECISIONS

__all__ = ["FORMATS", "Format", "PRECISIONS"]


def _exporter(target: str) -> Callable:
    """The exporter a "module:function" names, imported on the first call."""
    module, _, name = target.partition(":")

    def export(*args, **kwargs):
        from importlib import import_module

        return getattr(import_module(module), name)(*args, **kwargs)

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
    row.name: Format(row.name, row.file, row.precisions, _exporter(row.exporter), row.uses_opset)
    for row in ARTIFACT_FORMATS.values()
}
