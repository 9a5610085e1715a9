"""The one table of artifact formats: name, model file, precisions, exporter.

tiffin.json's schema (tiffin/artifact_schema.py: which `format`, `model_file` and `precision`
it may say), its reader (tiffin/artifact_json.py), the exporters (tiffin/export/formats.py gives
each row its exporter), the CLI's choices, the benchmark and README's format table (a test
compares) all read it; the runtimes that run each format's file are tiffin/runtimes.py's rows.
A new format is its exporter module plus one row here. Plain data: the CLI reads it at start,
so it imports nothing (no torch, no pydantic).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArtifactFormat:
    """One format an artifact's model file can be in."""

    name: str
    file: str  # the model file's fixed name in the artifact folder: tiffin.json may point to no other
    precisions: tuple[str, ...]
    exporter: str  # "module:function" writing it (torch), imported only when exporting (tiffin.export.formats)
    uses_opset: bool = False
    # the weights file beside the model file, for models past protobuf's 2 GB limit (ONNX external
    # data, tiffin.json's `external_data`); None: the model file holds every weight
    external_data: str | None = None


ARTIFACT_FORMATS: dict[str, ArtifactFormat] = {
    f.name: f
    for f in [
        ArtifactFormat("onnx", "model.onnx", ("fp32", "fp16", "int8"), "tiffin.export.onnx_format:export_onnx",
                       uses_opset=True, external_data="model.onnx.data"),
        ArtifactFormat("torchscript", "model.pt", ("fp32", "bf16"), "tiffin.export.torchscript_format:export_torchscript"),
        ArtifactFormat("mobile", "model.ptl", ("fp32",), "tiffin.export.torchscript_format:export_mobile"),
        ArtifactFormat("pt2", "model.pt2", ("fp32",), "tiffin.export.pt2_format:export_pt2"),
    ]
}
# format -> model file name: the only files an artifact's tiffin.json may point to
MODEL_FILES = {name: f.file for name, f in ARTIFACT_FORMATS.items()}
# format -> its external weights file's name, for the formats that may have one
EXTERNAL_DATA_FILES = {name: f.external_data for name, f in ARTIFACT_FORMATS.items() if f.external_data}
# every precision some format exports, in the table's order
PRECISIONS: tuple[str, ...] = tuple(dict.fromkeys(p for f in ARTIFACT_FORMATS.values() for p in f.precisions))
