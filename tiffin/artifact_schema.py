"""The schema of tiffin.json: one pydantic model per object, every field documented.

tiffin/artifact_json.py reads and writes tiffin.json through these models, and
tiffin/artifact_formats.py is the table of formats they name; this module only says what a
valid tiffin.json is. README's
tiffin.json table is generated from the fields' descriptions (`python -m tiffin.artifact_schema`
prints it) and a test compares the two, so a field cannot be added without being documented.

Unknown keys: a reader of schema version 1 ignores keys it does not know in the objects a newer
writer may grow without changing what a reader computes (the top level, `source`, `parity`:
`_Open`); everywhere else (preprocessing, graph tensors, the decoder) an unknown key changes
what the model expects, so it is refused (`_Closed`) rather than silently not applied. The
writer refuses unknown keys everywhere (`undocumented`): what tiffin writes is in this schema.

Torch-free, like all of tiffin/: serving validates artifacts with it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, Union, get_args, get_origin

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr,
                      model_validator)

from tiffin.artifact_formats import ARTIFACT_FORMATS, EXTERNAL_DATA_FILES, PRECISIONS
from tiffin.ctc_beam import DECODER_FILES

SCHEMA_VERSION = 1  # a reader refuses every other; a change old readers would misread is a new version

# Limits of what an artifact may say: past them a tiffin.json is refused, not run (a crop of 1e9
# would allocate until the machine fell over).
MAX_SIDE, MAX_FRAMES, MAX_RATE, MAX_CLASSES = 4096, 1024, 384_000, 100_000

Positive = Annotated[StrictInt, Field(ge=1)]
Number = Union[StrictInt, StrictFloat]
Seconds = Annotated[Number, Field(gt=0, le=3600)]
Sha256 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[StrictStr, Field(min_length=1)]
Names = Annotated[list[Name], Field(min_length=1, max_length=MAX_CLASSES)]
Triple = Annotated[list[Number], Field(min_length=3, max_length=3)]


class _Open(BaseModel):
    # Forward compatibility: a newer tiffin may add keys here within schema version 1 (as
    # `runtime` and `created` were added); none changes what a reader computes, so a reader
    # keeps them and ignores them. The writer still refuses any key this schema lacks.
    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    # A key here that this reader does not know would change what the model expects (a new
    # preprocessing step, a decoder setting): refused, never silently not applied.
    model_config = ConfigDict(extra="forbid")


class Tensor(_Closed):
    """One input or output of the model's graph."""

    name: Name = Field(description="its name in the graph (`frames`, `waveform`, `lengths`, `logits`)")
    dtype: StrictStr = Field(description="element type: `uint8` frames, `float32` waveforms and logits, `int64` "
                                         "lengths")
    shape: Annotated[list[Union[Positive, StrictStr]], Field(min_length=1)] = Field(
        description="one entry per axis: a size fixed in the graph, or the name of a dynamic axis (`batch`, "
                    "`samples`, `frames`)")


class VideoPreprocessing(_Closed):
    """What the host does to a video before the graph, and the numbers the graph normalises with."""

    num_frames: Annotated[StrictInt, Field(ge=1, le=MAX_FRAMES)] = Field(
        description="frames per clip, sampled at the midpoints of equal slices of the clip")
    clip_duration: Seconds = Field(description="seconds of video one clip spans")
    side_size: Annotated[StrictInt, Field(ge=1, le=MAX_SIDE)] = Field(
        description="the short side is resized to this many pixels")
    crop_size: Annotated[StrictInt, Field(ge=1, le=MAX_SIDE)] = Field(
        description="side of the centre square crop (at most `side_size`)")
    mean: Triple = Field([0.45] * 3, description="per-channel mean subtracted inside the graph (RGB, 0..1)")
    std: Triple = Field([0.225] * 3, description="per-channel standard deviation divided by inside the graph")
    slowfast_alpha: Optional[Positive] = Field(
        None, description="SlowFast's frame-rate ratio of its two pathways; null for other backbones")
    labels: Optional[Names] = Field(None, description="a copy of the top-level `labels` (the top-level one is read)")
    layout: Literal["BCTHW", "BTCHW"] = Field(
        "BCTHW", description="the axis order the graph hands its backbone: the zoos' [B, C, T, H, W], or "
                             "transformers' video models' [B, T, C, H, W]; the graph's input is uint8 frames either way")

    @model_validator(mode="after")
    def crop_within_side(self):
        if self.crop_size > self.side_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than side_size {self.side_size}")
        return self


class SpeechPreprocessing(_Closed):
    """What the host does to a recording before the graph, and how long ones are windowed."""

    sample_rate: Annotated[StrictInt, Field(ge=1000, le=MAX_RATE)] = Field(
        description="audio is mixed to mono and resampled to this rate (Hz)")
    normalize: StrictBool = Field(True, description="the graph normalises each utterance to zero mean, unit "
                                                    "variance over its real samples")
    chunk_seconds: Seconds = Field(30.0, description="recordings longer than this run in windows of this length")
    stride_seconds: Annotated[Number, Field(ge=0, le=3600)] = Field(
        5.0, description="seconds each window overlaps its neighbour by, on each side")
    conv_stride: Annotated[list[Positive], Field(min_length=1)] = Field(
        description="strides of the feature encoder's convolutions: which output frames each utterance owns")
    conv_kernel: Annotated[list[Positive], Field(min_length=1)] = Field(
        description="kernel sizes of the feature encoder's convolutions (one per stride)")
    vocab: Optional[Names] = Field(None, description="a copy of the top-level `vocab` (the top-level one is read)")
    blank_id: Optional[Annotated[StrictInt, Field(ge=0, le=MAX_CLASSES)]] = Field(
        None, description="the CTC blank's id in `vocab`; null or absent: `<pad>`'s")
    word_start: Optional[Annotated[StrictStr, Field(min_length=1, max_length=4)]] = Field(
        None, description="word pieces (Parakeet's SentencePiece tokens): the marker a piece starting a word begins "
                          "with (`▁`); null or absent: characters, `|` between words")

    @model_validator(mode="after")
    def one_kernel_a_stride(self):
        if len(self.conv_stride) != len(self.conv_kernel):
            raise ValueError("conv_stride and conv_kernel differ in length")
        return self


class Source(_Open):
    """Where the artifact came from, without the exporter's folders."""

    name: StrictStr = Field(description="the checkpoint's or folder's name, an embedded model's name "
                                        "(`tiffin/tiny-en`), or `in-memory model`")
    sha256: Optional[Sha256] = Field(None, description="sha256 of the source's weights file; null when there is "
                                                       "none to hash")
    relative: Optional[StrictStr] = Field(
        None, description="its path relative to the artifact, when the two sit within three folders of a common "
                          "one; `tiffin check` and `tiffin benchmark ARTIFACT` follow it")
    embedded: Optional[StrictBool] = Field(None, description="true for an embedded model (found again by name)")


class Quantization(_Closed):
    """How an int8 ONNX artifact was quantised."""

    method: Literal["static QDQ", "dynamic MatMul"] = Field(
        description="static QDQ calibrated on real clips (video), or dynamic int8 MatMuls (speech)")
    reduce_range: StrictBool = Field(description="7-bit weights, for CPUs without VNNI")
    why: StrictStr = Field(description="the CPU feature that decided `reduce_range`")


class Tolerance(_Closed):
    """The bounds the parity gate held the artifact to (export/specs.py, per precision)."""

    atol: Number = Field(description="absolute part of `atol + rtol * |value|`")
    rtol: Number = Field(description="relative part of `atol + rtol * |value|`")
    min_top1_agreement: Number = Field(description="video: least share of inputs whose top-1 label is kept")
    max_cer: Number = Field(description="speech: largest CER of the artifact's transcripts against PyTorch's")


class ParitySample(_Closed):
    """One check batch of the parity gate."""

    inputs: list[list[StrictInt]] = Field(description="the shape of each input of the batch")
    max_abs_diff: Number = Field(description="largest |artifact - PyTorch| over the batch's outputs")
    max_rel_diff: Number = Field(description="largest difference relative to PyTorch's value")
    within_tolerance: StrictBool = Field(description="every value within the tolerance")


class ParityReport(_Open):
    """The parity gate's report on the artifact as exported (`tiffin check` re-runs it)."""

    tolerance: Tolerance = Field(description="the bounds held to")
    samples: Annotated[list[ParitySample], Field(min_length=1)] = Field(description="one entry per check batch")
    max_abs_diff: Number = Field(description="largest difference over every batch")
    top1_agreement: Optional[Number] = Field(None, description="video: share of inputs whose top-1 label the "
                                                               "artifact keeps")
    transcript_cer: Optional[Number] = Field(None, description="speech: CER of the artifact's greedy transcripts "
                                                               "against PyTorch's")
    beam_transcript_cer: Optional[Number] = Field(
        None, description="speech with a decoder: the same for beam-search transcripts")


class DecoderFile(_Closed):
    """A file the decoder brings into the artifact folder."""

    file: Literal[tuple(DECODER_FILES.values())] = Field(description="its fixed name in the folder (never a path)")
    sha256: Sha256 = Field(description="its sha256, checked on every read")


class TunedOn(_Closed):
    """Where `tiffin export --tune-on DEV` chose `lm_weight` and `word_score` (recorded only)."""

    data: StrictStr = Field(description="the dev set's file or folder name")
    utterances: StrictInt = Field(description="recordings decoded")
    wer: Number = Field(description="WER with the chosen settings")
    given_wer: Number = Field(description="WER with the settings given on the command line")


class Decoder(_Closed):
    """A speech artifact's beam-search decoder (`tiffin export --words/--lm`; tiffin/ctc_beam.py)."""

    kind: Literal["beam"] = Field(description="beam search over a word list, with an optional KenLM model")
    beam_width: Positive = Field(description="hypotheses kept per frame")
    lm_weight: Number = Field(description="weight of the language model's log-probability")
    word_score: Number = Field(description="score added per word")
    beam_threshold: Number = Field(description="frames whose best token scores this far below the best path's "
                                               "are pruned")
    words: Optional[DecoderFile] = Field(None, description="the word list (`words.txt`)")
    lm: Optional[DecoderFile] = Field(None, description="the KenLM model (`lm.arpa` text or `lm.bin` binary)")
    hotwords: list[StrictStr] = Field([], description="words favoured by `hotword_weight`")
    hotword_weight: Number = Field(0.0, description="score added each time a hotword is chosen")
    tuned_on: Optional[TunedOn] = Field(None, description="where the weights were tuned, when they were")


class ExternalData(_Closed):
    """ONNX weights kept beside the graph, in one file: models past protobuf's 2 GB limit."""

    file: Literal[tuple(EXTERNAL_DATA_FILES.values())] = Field(
        description="its fixed name in the folder (never a path); the model file may name no other")
    sha256: Sha256 = Field(description="its sha256, checked on every read, like the model file's")


_FORMAT = Literal[tuple(ARTIFACT_FORMATS)]
_PRECISION = Literal[PRECISIONS]


class ArtifactMeta(_Open):
    """What every artifact's tiffin.json holds, whatever its task."""

    classes_key: ClassVar[str]  # the key naming the model's outputs (a task row's classes_key)

    schema_version: Literal[SCHEMA_VERSION] = Field(description="this schema's version; a reader refuses others")
    task: StrictStr = Field(description="`video-classification` or `speech-recognition` (a row of "
                                        "tiffin/tasks.py)")
    backbone: StrictStr = Field(description="the network it was fine-tuned from (`x3d_xs`, "
                                            "`facebook/wav2vec2-base-960h`)")
    format: _FORMAT = Field(description="the format of the model file (the formats table)")
    precision: _PRECISION = Field(description="one of the format's precisions")
    model_file: StrictStr = Field(description="the model file's name: the format's fixed name, never a path")
    sha256: Sha256 = Field(description="sha256 of the model file, checked on every read")
    external_data: Optional[ExternalData] = Field(
        None, description="ONNX: the weights file beside the model file, for models past protobuf's 2 GB limit; "
                          "absent when the model file holds every weight")
    inputs: Annotated[list[Tensor], Field(min_length=1)] = Field(description="the graph's inputs, in call order")
    outputs: Annotated[list[Tensor], Field(min_length=1)] = Field(
        description="the graph's outputs; the first one's last axis has one entry per label or token")
    dynamic_axes: dict[StrictStr, dict[Annotated[StrictStr, Field(pattern=r"^[0-9]+$")], StrictStr]] = Field(
        {}, description="tensor name -> {axis index: axis name} of the axes that may vary")
    opset: Optional[Positive] = Field(None, description="ONNX: the opset the graph was exported at")
    quantization: Optional[Quantization] = Field(None, description="ONNX int8: how it was quantised")
    parity: Optional[ParityReport] = Field(None, description="the parity gate's report; not in the model file")
    source: Union[StrictStr, Source, None] = Field(
        None, description="the model it was exported from (a path string in artifacts of tiffin before 0.2)")
    versions: dict[StrictStr, StrictStr] = Field({}, description="package -> version of the exporting environment "
                                                                 "(tiffin, torch, onnx, ...)")
    created: Optional[StrictStr] = Field(None, description="when it was exported, UTC, ISO 8601")
    runtime: Optional[StrictStr] = Field(
        None, description="the runtime to open it on (a row of tiffin/runtimes.py), recorded by `tiffin benchmark "
                          "--record`; predict, check, the services and `tiffin build` use it")

    @model_validator(mode="after")
    def precision_of_the_format(self):
        if self.precision not in ARTIFACT_FORMATS[self.format].precisions:
            raise ValueError(f"precision {self.precision} is not one {self.format} exports "
                             f"({', '.join(ARTIFACT_FORMATS[self.format].precisions)})")
        return self

    @model_validator(mode="after")
    def external_data_of_the_format(self):
        if self.external_data is not None and self.external_data.file != EXTERNAL_DATA_FILES.get(self.format):
            raise ValueError(f"external_data: a {self.format} artifact keeps its weights in its model file")
        return self


class VideoArtifactMeta(ArtifactMeta):
    """tiffin.json of a video classifier."""

    classes_key: ClassVar[str] = "labels"
    task: Literal["video-classification"] = Field(description="the task (a row of tiffin/tasks.py); rows marked "
                                                              "with its name are its own")
    preprocessing: VideoPreprocessing = Field(description="decoding and normalisation numbers")
    labels: Names = Field(description="the class names, one per output logit, in output order")


class SpeechArtifactMeta(ArtifactMeta):
    """tiffin.json of a speech recogniser."""

    classes_key: ClassVar[str] = "vocab"
    task: Literal["speech-recognition"] = Field(description="the task (a row of tiffin/tasks.py); rows marked "
                                                            "with its name are its own")
    preprocessing: SpeechPreprocessing = Field(description="resampling, normalisation and windowing numbers")
    vocab: Names = Field(description="the CTC tokens, one per output logit (blank and word delimiter included)")
    decoder: Optional[Decoder] = Field(None, description="the beam-search decoder it transcribes with by default; "
                                                         "null or absent: greedy")

    @model_validator(mode="after")
    def blank_in_the_vocabulary(self):
        blank = self.preprocessing.blank_id
        if blank is not None and blank >= len(self.vocab):
            raise ValueError(f"preprocessing.blank_id {blank} is past the vocabulary's {len(self.vocab)} tokens")
        return self


# task -> its model; a task row of tiffin/tasks.py has one here (a test checks)
TASK_MODELS: dict[str, type[ArtifactMeta]] = {m.model_fields["task"].annotation.__args__[0]: m
                                              for m in (VideoArtifactMeta, SpeechArtifactMeta)}


def undocumented(model: BaseModel, at: str = "") -> list[str]:
    """Keys of a validated tiffin.json that no model of this schema declares (kept by `_Open`)."""
    found = [f"{at}{key}" for key in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(item, BaseModel):
                found += undocumented(item, f"{at}{name}{'[]' if isinstance(value, list) else ''}.")
    return found


def _type_name(annotation: Any) -> str:
    """A field's type in words, for the README table."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Union:
        names = list(dict.fromkeys(_type_name(a) for a in args))
        return " or ".join(n for n in names if not (n == "integer" and "number" in names))
    if origin is Literal:
        return " or ".join(f"`{a!r}`".replace("'", '"') for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"object of {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}.get(
        annotation, str(annotation))


def _fields(model: type[BaseModel], prefix: str = "") -> dict[str, tuple[str, str, str]]:
    """path -> (type, required or optional, description) of every field of `model`, nested ones
    by dotted path (`[]` after a list), in declaration order."""
    found = {}
    for name, field in model.model_fields.items():
        key, parts = f"{prefix}{name}", [field.annotation, *_flat_args(field.annotation)]
        found[key] = (_type_name(field.annotation), "required" if field.is_required() else "optional",
                      field.description)
        listed = any(get_origin(a) is list for a in parts)
        for sub in dict.fromkeys(a for a in parts if isinstance(a, type) and issubclass(a, BaseModel)):
            found.update(_fields(sub, f"{key}{'[]' if listed else ''}."))
    return found


def _flat_args(annotation: Any) -> list[Any]:
    """Every type an annotation is built of (through Annotated, Union, list, dict)."""
    found = []
    for arg in get_args(annotation):
        found += [arg, *_flat_args(arg)]
    return found


def field_table() -> str:
    """README's table of tiffin.json: one row per field, nested ones by dotted path; a field both
    tasks declare alike is one row, task `both`."""
    per_task = {task.split("-")[0]: _fields(model) for task, model in TASK_MODELS.items()}
    rows = ["| field | task | type | | meaning |", "|---|---|---|---|---|"]
    for key in dict.fromkeys(k for fields in per_task.values() for k in fields):
        having = {task: fields[key] for task, fields in per_task.items() if key in fields}
        alike = len(having) == len(per_task) and len(set(having.values())) == 1
        for task, (kind, need, meaning) in ({"both": next(iter(having.values()))} if alike else having).items():
            cells = [f"`{key}`", task, kind, need, meaning]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(field_table())
