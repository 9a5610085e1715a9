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
# format -> model file name: the only files an artifact's tiffin.json may point to
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "mobile": "model.ptl", "pt2": "model.pt2"}

# Limits of what an artifact may say: past them a tiffin.json is refused, not run (a crop of 1e9
# would allocate until the machine fell over).
_MAX_SIDE, _MAX_FRAMES, _MAX_RATE, _MAX_CLASSES = 4096, 1024, 384_000, 100_000
# tiffin.json's size: 100,000 labels of 100 characters fit in 16 MB; past it the file is not one
# an export wrote, and parsing it would only cost memory
_MAX_META_BYTES = 16 << 20


def _schema():
    """The pydantic models of tiffin.json (built on first use: pydantic imports in ~0.1 s)."""
    from typing import Annotated, Literal, Union

    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

    Positive = Annotated[StrictInt, Field(ge=1)]
    Seconds = Annotated[Union[StrictInt, StrictFloat], Field(gt=0, le=3600)]
    Names = Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(min_length=1, max_length=_MAX_CLASSES)]

    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")  # newer writers may add fields; readers ignore them

    class Tensor(Open):
        name: Annotated[StrictStr, Field(min_length=1)]
        dtype: StrictStr
        shape: Annotated[list[Union[Positive, StrictStr]], Field(min_length=1)]

    class VideoPreprocessing(Open):
        num_frames: Annotated[StrictInt, Field(ge=1, le=_MAX_FRAMES)]
        clip_duration: Seconds
        side_size: Annotated[StrictInt, Field(ge=1, le=_MAX_SIDE)]
        crop_size: Annotated[StrictInt, Field(ge=1, le=_MAX_SIDE)]
        mean: Annotated[list[Union[StrictInt, StrictFloat]], Field(min_length=3, max_length=3)] = [0.45] * 3
        std: Annotated[list[Union[StrictInt, StrictFloat]], Field(min_length=3, max_length=3)] = [0.225] * 3
        slowfast_alpha: Positive | None = None

        @model_validator(mode="after")
        def crop_within_side(self):
            if self.crop_size > self.side_size:
                raise ValueError(f"crop_size {self.crop_size} is larger than side_size {self.side_size}")
            return self

    class SpeechPreprocessing(Open):
        sample_rate: Annotated[StrictInt, Field(ge=1000, le=_MAX_RATE)]
        normalize: StrictBool = True
        chunk_seconds: Seconds = 30.0
        stride_seconds: Annotated[Union[StrictInt, StrictFloat], Field(ge=0, le=3600)] = 5.0
        conv_stride: Annotated[list[Positive], Field(min_length=1)]
        conv_kernel: Annotated[list[Positive], Field(min_length=1)]

        @model_validator(mode="after")
        def one_kernel_a_stride(self):
            if len(self.conv_stride) != len(self.conv_kernel):
                raise ValueError("conv_stride and conv_kernel differ in length")
            return self

    class Common(Open):
        schema_version: Literal[1]
        backbone: StrictStr
        format: Literal["onnx", "torchscript", "mobile", "pt2"]
        precision: StrictStr
        model_file: StrictStr
        inputs: Annotated[list[Tensor], Field(min_length=1)]
        outputs: Annotated[list[Tensor], Field(min_length=1)]
        sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
        runtime: StrictStr | None = None  # the runtime to open it on (tiffin benchmark --record); a row of tiffin.runtimes

    class VideoArtifact(Common):
        task: Literal["video-classification"]
        preprocessing: VideoPreprocessing
        labels: Names

    class DecoderFile(Open):
        file: Literal["words.txt", "lm.arpa", "lm.bin"]  # fixed names: never a path
        sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]

    class Decoder(Open):
        kind: Literal["beam"]
        beam_width: Positive
        lm_weight: Union[StrictInt, StrictFloat]
        word_score: Union[StrictInt, StrictFloat]
        beam_threshold: Union[StrictInt, StrictFloat]
        words: DecoderFile | None = None
        lm: DecoderFile | None = None
        hotwords: list[StrictStr] = []
        hotword_weight: Union[StrictInt, StrictFloat] = 0.0

    class SpeechArtifact(Common):
        task: Literal["speech-recognition"]
        preprocessing: SpeechPreprocessing
        vocab: Names
        decoder: Decoder | None = None

    return {"video-classification": VideoArtifact, "speech-recognition": SpeechArtifact}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_meta(meta: Any, where: str) -> dict[str, Any]:
    """`meta` if it is a tiffin.json this version reads, else a TiffinError naming the first problem's field."""
    from pydantic import ValidationError

    if not isinstance(meta, dict):
        raise TiffinError(f"{where}: not a tiffin.json object (found a JSON {type(meta).__name__})")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise TiffinError(f"{where}: schema_version {meta.get('schema_version')!r} is not one this tiffin reads "
                          f"({SCHEMA_VERSION}); export the model again with this version")
    from tiffin.tasks import task_named

    row = task_named(meta.get("task"), where)
    task = row.name
    schemas = _schema()
    try:
        schemas[task].model_validate(meta)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise TiffinError(f"{where}: {field}: {first['msg'].lower()}; export the model again") from None
    # one name per output class: fewer would send a top score or CTC token past the list's end
    output = meta["outputs"][0]
    classes = output["shape"][-1]
    if isinstance(classes, int) and classes != len(meta[row.classes_key]):
        raise TiffinError(f"{where}: {row.classes_key} has {len(meta[row.classes_key])} entries but the model's "
                          f"output {output['name']!r} has {classes}; export the model again")
    if MODEL_FILES.get(meta["format"]) != meta["model_file"]:
        # never a path: an artifact cannot point outside its own directory
        raise TiffinError(f"{where}: model_file {meta['model_file']!r} does not match format {meta['format']!r}")
    if meta.get("runtime") is not None:
        from tiffin.runtimes import runtimes_for

        if meta["runtime"] not in [r.name for r in runtimes_for(meta["format"])]:
            raise TiffinError(f"{where}: runtime {meta['runtime']!r} does not run {meta['format']} artifacts; "
                              "record another with tiffin benchmark --record, or remove the key")
    return meta


def read_artifact(path: str | Path, check_model_file: bool = True) -> dict[str, Any]:
    """tiffin.json of an artifact directory, validated, with the model file's hash verified
    (unless `check_model_file` is False: for a reader of the spec that never opens the model).

    Raises:
        TiffinError: not an artifact, unknown schema, or a model file that changed since export.
    """
    path = Path(path)
    meta_path = path / "tiffin.json"
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
