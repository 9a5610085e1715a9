"""Reading an artifact written by `tiffin export`: tiffin.json checked, model file hash verified.

Torch-free, so serving and the bento read artifacts with the same checks as the CLI. An
artifact is a directory holding the model file and tiffin.json; see export/artifact.py for
what is written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tiffin.errors import TiffinError

SCHEMA_VERSION = 1
TASKS = ("video-classification", "speech-recognition")
# format -> model file name: the only files an artifact's tiffin.json may point to
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "mobile": "model.ptl"}

# key -> expected JSON type, for every task; then per task
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "task": str, "backbone": str, "format": str, "precision": str, "model_file": str,
    "preprocessing": dict, "inputs": list, "outputs": list, "sha256": str,
}
_REQUIRED_BY_TASK = {"video-classification": {"labels": list}, "speech-recognition": {"vocab": list}}
_PREPROCESSING = {
    "video-classification": {"num_frames": int, "clip_duration": (int, float), "side_size": int, "crop_size": int},
    "speech-recognition": {"sample_rate": int, "conv_stride": list, "conv_kernel": list},
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_meta(meta: Any, where: str) -> dict[str, Any]:
    """`meta` if it is a tiffin.json this version reads, else a TiffinError naming the first problem."""
    if not isinstance(meta, dict):
        raise TiffinError(f"{where}: not a tiffin.json object")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise TiffinError(f"{where}: schema_version {meta.get('schema_version')!r} is not one this tiffin reads "
                          f"({SCHEMA_VERSION}); export the model again with this version")
    task = meta.get("task")
    if task not in TASKS:
        raise TiffinError(f"{where}: task {task!r} is not one of {', '.join(TASKS)}")
    for section, required in (("", _REQUIRED), ("", _REQUIRED_BY_TASK[task]),
                              ("preprocessing.", _PREPROCESSING[task])):
        values = meta if not section else meta.get("preprocessing", {})
        for key, kind in required.items():
            if not isinstance(values.get(key), kind) or isinstance(values.get(key), bool):
                raise TiffinError(f"{where}: {section}{key} is missing or not a {_type_name(kind)}")
    if MODEL_FILES.get(meta["format"]) != meta["model_file"]:
        # never a path: an artifact cannot point outside its own directory
        raise TiffinError(f"{where}: model_file {meta['model_file']!r} does not match format {meta['format']!r}")
    return meta


def _type_name(kind: type | tuple[type, ...]) -> str:
    return "number" if isinstance(kind, tuple) else {int: "integer", str: "string", list: "list", dict: "object"}[kind]


def read_artifact(path: str | Path) -> dict[str, Any]:
    """tiffin.json of an artifact directory, validated, with the model file's hash verified.

    Raises:
        TiffinError: not an artifact, unknown schema, or a model file that changed since export.
    """
    path = Path(path)
    meta_path = path / "tiffin.json"
    if not meta_path.is_file():
        raise TiffinError(f"{path}: not an artifact (no tiffin.json); give a folder written by `tiffin export`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TiffinError(f"{meta_path}: not valid JSON ({exc})") from None
    validate_meta(meta, str(meta_path))
    model_file = path / meta["model_file"]
    if not model_file.is_file() or sha256(model_file) != meta["sha256"]:
        raise TiffinError(f"{model_file}: missing or changed since export (sha256 differs); export it again")
    if meta["format"] == "onnx":
        check_external_data(model_file)
    return meta


def check_external_data(model_file: Path) -> None:
    """Refuse an ONNX file whose tensors live in files outside its own folder.

    tiffin's exports keep every weight inside model.onnx; a file naming external data beyond
    its folder is not one of them, and reading it would read what the path names. Checked with
    the onnx package where it is installed (export, CLI); ONNX Runtime, which serving has,
    refuses such paths itself when it opens the session.
    """
    try:
        import onnx
    except ImportError:
        return
    folder = model_file.parent.resolve()
    model = onnx.load(str(model_file), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            raise TiffinError(f"{model_file}: tensor {tensor.name!r} points outside the artifact ({location}); "
                              "refusing to read it")


def fixed_batch(meta: dict[str, Any]) -> int | None:
    """The batch size baked into an artifact's graph, None when the batch axis is dynamic."""
    batch = meta["inputs"][0]["shape"][0]
    return batch if isinstance(batch, int) else None
