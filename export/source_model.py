"""The model an artifact is exported from: loading it once, recording where it came from in
tiffin.json (`source`, `versions`), and finding it again for `tiffin check` and `tiffin benchmark
ARTIFACT`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tiffin.artifact_json import sha256
from tiffin.errors import TiffinError
from tiffin.export.specs import ExportSpec
from tiffin.tasks import TASKS
from tiffin.train.backbones import EMBEDDED_MODELS


def load_source(model: Path | str, batch: int | None = None):
    """(task, loaded model, export spec) for a checkpoint, a Hugging Face speech folder or an
    embedded model, read once."""
    from tiffin.train.predict import load_model

    loaded = load_model(model)
    return loaded.task, loaded, export_spec_of(loaded, batch)


def export_spec_of(loaded, batch: int | None = None) -> ExportSpec:
    """The export spec (graph inputs, tracing sample, tolerances) of a loaded model."""
    return TASKS[loaded.task].part("export_spec")(loaded.spec, batch)


def versions() -> dict[str, str]:
    """tiffin.json's `versions`: the packages of the exporting environment that shape the artifact."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("tiffin", "torch", "onnx", "onnxruntime", "transformers", "pytorchvideo"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def describe_source(model: Path | str | None, out: Path) -> dict[str, Any]:
    """tiffin.json's `source`: where an artifact came from, without the exporter's folders: an
    embedded model's name, or the file (or folder) name with the sha256 of its weights, and its
    path relative to the artifact when the two sit within three folders of a common one
    (runs/NAME/checkpoints and runs/NAME/export), so `tiffin check` finds it again."""
    if model is None:  # an in-memory model (the Python API's model.export()): no file to point at
        return {"name": "in-memory model", "sha256": None, "relative": None}
    if str(model) in EMBEDDED_MODELS:
        return {"name": str(model), "embedded": True}
    path = Path(model).resolve()
    weights = path if path.is_file() else next(
        (path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
    relative = os.path.relpath(path, out.resolve())
    climbs = len([part for part in Path(relative).parts if part == ".."])
    near = climbs <= 3 and os.path.commonpath([path, out.resolve()]) != os.path.abspath(os.sep)
    return {"name": path.name, "sha256": sha256(weights) if weights else None, "relative": relative if near else None}


def source_model(path: Path, meta: dict[str, Any], given: Path | None = None,
                 hint: str = "give it with --source CHECKPOINT") -> Path | str:
    """The model an artifact was exported from: `given`, else the embedded name or the relative
    path tiffin.json records (an absolute one in artifacts of earlier tiffins).

    Raises:
        TiffinError: the source cannot be found; says what to pass.
    """
    recorded = meta.get("source")
    if given is not None:
        candidate = Path(given)
    elif isinstance(recorded, str):  # written by tiffin before 0.2
        candidate = Path(recorded)
        if recorded in EMBEDDED_MODELS:
            return recorded
    elif isinstance(recorded, dict) and recorded.get("embedded"):
        return recorded["name"]
    elif isinstance(recorded, dict) and recorded.get("relative"):
        candidate = Path(path) / recorded["relative"]
    else:
        name = recorded.get("name") if isinstance(recorded, dict) else "?"
        raise TiffinError(f"{path}: the model it was exported from ({name}) is not recorded beside it; {hint}")
    if not candidate.exists():
        raise TiffinError(f"{path}: its source model {candidate.name} is gone (looked at {candidate}); {hint}")
    return candidate
