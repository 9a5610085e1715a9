"""An artifact's tiffin.json: reading it (checked, model file hash verified) and writing it (the
one writer: validated, atomically).

An artifact is a folder holding the model file (with, for an ONNX model past protobuf's 2 GB
limit, its weights in model.onnx.data: `external_data`), tiffin.json and tiffin.sig (tiffin/signing.py);
tiffin/artifact_schema.py says field by field what tiffin.json holds, tiffin/artifact_formats.py
which formats (model files, precisions) it may name. Exporting (tiffin.export.exporting) and
`tiffin benchmark --record` write it through `write_meta`; the exporters, the parity gate and
the decoder return their parts for it. Torch-free and light (pydantic is imported on the first
read or write, not with this module), so serving and the bento read artifacts with the same
checks as the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tiffin.artifact_formats import MODEL_FILES
from tiffin.errors import TiffinError

META_FILE = "tiffin.json"

# tiffin.json's size: 100,000 labels of 100 characters fit in 16 MB; past it the file is not one
# an export wrote, and parsing it would only cost memory
_MAX_META_BYTES = 16 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _validated(meta: Any, where: str, hint: str):
    """The schema model of `meta` (tiffin.artifact_schema), else a TiffinError naming the first problem's field."""
    from pydantic import ValidationError

    from tiffin.artifact_schema import SCHEMA_VERSION, TASK_MODELS

    if not isinstance(meta, dict):
        raise TiffinError(f"{where}: not a tiffin.json object (found a JSON {type(meta).__name__})")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise TiffinError(f"{where}: schema_version {meta.get('schema_version')!r} is not one this tiffin reads "
                          f"({SCHEMA_VERSION}); export the model again with this version")
    if meta.get("task") not in TASK_MODELS:
        raise TiffinError(f"{where}: task {meta.get('task')!r} is not one of {', '.join(TASK_MODELS)}")
    schema = TASK_MODELS[meta["task"]]
    try:
        model = schema.model_validate(meta)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise TiffinError(f"{where}: {field}: {first['msg'].lower()}; {hint}") from None
    # one name per output class: fewer would send a top score or CTC token past the list's end
    output, classes_key = meta["outputs"][0], schema.classes_key
    classes = output["shape"][-1]
    if isinstance(classes, int) and classes != len(meta[classes_key]):
        raise TiffinError(f"{where}: {classes_key} has {len(meta[classes_key])} entries but the model's "
                          f"output {output['name']!r} has {classes}; {hint}")
    if MODEL_FILES.get(meta["format"]) != meta["model_file"]:
        # never a path: an artifact cannot point outside its own directory
        raise TiffinError(f"{where}: model_file {meta['model_file']!r} does not match format {meta['format']!r}")
    if meta.get("runtime") is not None:
        from tiffin.runtimes import runtimes_for

        if meta["runtime"] not in [r.name for r in runtimes_for(meta["format"])]:
            raise TiffinError(f"{where}: runtime {meta['runtime']!r} does not run {meta['format']} artifacts; "
                              "record another with tiffin benchmark --record, or remove the key")
    return model


def validate_meta(meta: Any, where: str) -> dict[str, Any]:
    """`meta` if it is a tiffin.json this version reads, else a TiffinError naming the first problem's field."""
    _validated(meta, where, "export the model again")
    return meta


def write_meta(folder: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write `meta` as `folder`/tiffin.json, the one way tiffin.json is written: checked against
    the schema as a reader will read it, with no key the schema does not document, and replaced
    atomically (a reader sees the old file or the new one). Returns what was written, as a reader
    gets it back. Re-signing is the caller's (tiffin.signing.sign_artifact).

    Raises:
        TiffinError: the dict is not a valid tiffin.json (a bug of its writer); nothing was written.
    """
    from tiffin.artifact_schema import undocumented

    path = Path(folder) / META_FILE
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    written = json.loads(text)  # tuples become lists: validated exactly as it will be read
    hint = "a tiffin.json writer produced it; nothing was written"
    extra = undocumented(_validated(written, str(path), hint))
    if extra:
        raise TiffinError(f"{path}: {extra[0]}: not a field of tiffin/artifact_schema.py; document it there "
                          f"(and in README) before writing it; nothing was written")
    tmp = path.with_name(f".{META_FILE}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return written


def read_artifact(path: str | Path, check_model_file: bool = True) -> dict[str, Any]:
    """tiffin.json of an artifact directory, validated, with the model file's hash verified
    (unless `check_model_file` is False: for a reader of the spec that never opens the model).

    Raises:
        TiffinError: not an artifact, unknown schema, or a model file that changed since export.
    """
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise TiffinError(f"{path}: not an artifact (no tiffin.json); give a folder written by `tiffin export`")
    if meta_path.stat().st_size > _MAX_META_BYTES:
        raise TiffinError(f"{meta_path}: {meta_path.stat().st_size} bytes is larger than any tiffin.json an export "
                          f"writes ({_MAX_META_BYTES >> 20} MB at most); export the model again")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        validate_meta(meta, str(meta_path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TiffinError(f"{meta_path}: not valid JSON ({exc})") from None
    except RecursionError:  # arrays or objects nested thousands deep: no export writes that
        raise TiffinError(f"{meta_path}: nested too deeply to be a tiffin.json; export the model again") from None
    for key in ("words", "lm"):  # the decoder's word list and LM travel with the model, checked alike
        entry = (meta.get("decoder") or {}).get(key)
        if entry and (not (path / entry["file"]).is_file() or sha256(path / entry["file"]) != entry["sha256"]):
            raise TiffinError(f"{path / entry['file']}: missing or changed since export (sha256 differs); "
                              "export it again")
    model_file = path / meta["model_file"]
    if not check_model_file:
        return meta
    if not model_file.is_file() or sha256(model_file) != meta["sha256"]:
        raise TiffinError(f"{model_file}: missing or changed since export (sha256 differs); export it again")
    data = meta.get("external_data")  # the weights of a model past protobuf's 2 GB limit, checked alike
    if data and (not (path / data["file"]).is_file() or sha256(path / data["file"]) != data["sha256"]):
        raise TiffinError(f"{path / data['file']}: missing or changed since export (sha256 differs); export it again")
    if meta["format"] == "onnx":
        check_external_data(model_file, data["file"] if data else None)
    return meta


def check_external_data(model_file: Path, recorded: str | None = None) -> None:
    """Refuse an ONNX file whose tensors live in files outside its own folder, or in any file
    but `recorded` (tiffin.json's `external_data`, whose hash read_artifact checked).

    tiffin's exports keep every weight inside model.onnx, or, past protobuf's 2 GB limit, in
    the one model.onnx.data beside it that tiffin.json records; a file naming other external
    data is not one of them, and reading it would read what the path names. Checked with the
    onnx package where it is installed (export, CLI); ONNX Runtime, which serving has, refuses
    paths outside the folder itself when it opens the session, and the recorded file's hash is
    checked everywhere.
    """
    try:
        import onnx
    except ImportError:
        return
    folder = model_file.parent.resolve()
    allowed = (folder / recorded).resolve() if recorded else None
    model = onnx.load(str(model_file), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            raise TiffinError(f"{model_file}: tensor {tensor.name!r} points outside the artifact ({location}); "
                              "refusing to read it")
        if target != allowed:
            raise TiffinError(f"{model_file}: tensor {tensor.name!r} reads external data from {location!r}, a file "
                              "tiffin.json does not record (its external_data); refusing to read it, export it again")


def fixed_batch(meta: dict[str, Any]) -> int | None:
    """The batch size baked into an artifact's graph, None when the batch axis is dynamic."""
    batch = meta["inputs"][0]["shape"][0]
    return batch if isinstance(batch, int) else None
