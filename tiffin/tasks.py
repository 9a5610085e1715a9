"""The table of tasks: one row per task, holding everything that differs between them.

Code asks the row (`TASKS[meta["task"]].classes_key`, `task.part("export_spec")`) instead of
comparing task names; a new task is its modules plus one row. The spec is held directly. The
host predictor and a stage's parts are named "module:attribute" and imported by `part()` only
when asked for, so this module imports nothing heavy: no stage (serving reads the table without
torch installed), and not the host path either (tiffin.host imports PyAV, and reads this table).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from tiffin.errors import TiffinError
from tiffin.spec import SpeechSpec, VideoSpec


@dataclass(frozen=True)
class Task:
    name: str
    short: str  # `tiffin train SHORT`, `tiffin synth SHORT`
    classes_key: str  # the spec field and tiffin.json key naming the outputs: labels | vocab
    spec: type  # VideoSpec | SpeechSpec: the preprocessing numbers
    host_predictor: str  # tiffin.host's predictor class: files -> top-k labels | transcripts (`predictor`)
    agreement_key: str  # the parity report's decision-level figure
    metrics: tuple[str, ...]  # what `tiffin evaluate` and the benchmark report
    bento_model: str  # the BentoML model name `tiffin build` stores an artifact under
    service: str  # the BentoML service (import path, as bentoml serve takes it)
    static_int8: bool  # int8 calibrates on real samples (--calibration-data), else dynamic
    # parts of the stages, imported when asked for ("module:attribute")
    model_class: str  # the Python API's LightningModule (torch): what tiffin.load makes of a checkpoint
    checkpoint_loader: str  # train: a checkpoint dict -> a loaded PyTorch model
    evaluation: str  # train: (predictor, data, options) -> scores
    export_spec: str  # export: (spec, batch) -> ExportSpec
    samples: str  # export: (loaded, files) -> input batches from real media
    agreement: str  # export: the parity gate's decision-level check
    benchmark_inputs: str  # export: (spec, batch, generator) -> a random input batch

    @property
    def predictor(self) -> type:
        """The host predictor class of this task (tiffin.host), imported now."""
        return self.part("host_predictor")

    def part(self, field: str) -> Any:
        """The stage object a "module:attribute" field names, imported now."""
        module, _, attribute = getattr(self, field).partition(":")
        return getattr(import_module(module), attribute)

    def classes(self, spec: Any) -> tuple[str, ...]:
        """The output names of a spec of this task (labels or vocabulary)."""
        return tuple(getattr(spec, self.classes_key))


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("video-classification", "video", "labels", VideoSpec, "tiffin.host:VideoPredictor", "top1_agreement",
             ("accuracy",), "tiffin-video", "tiffin.serve.video:VideoClassifier", static_int8=True,
             model_class="tiffin.video:VideoClassifier",
             checkpoint_loader="tiffin.train.predict:video_from_checkpoint",
             evaluation="tiffin.train.evaluate:video_scores",
             export_spec="tiffin.export.specs:video_spec_for", samples="tiffin.export.real_samples:video_samples",
             agreement="tiffin.export.parity:TopOneAgreement",
             benchmark_inputs="tiffin.export.benchmark:video_inputs"),
        Task("speech-recognition", "speech", "vocab", SpeechSpec, "tiffin.host:SpeechPredictor", "transcript_cer",
             ("cer", "wer"), "tiffin-speech", "tiffin.serve.speech:SpeechRecognizer", static_int8=False,
             model_class="tiffin.speech:SpeechRecognition",
             checkpoint_loader="tiffin.train.predict:speech_from_checkpoint",
             evaluation="tiffin.train.evaluate:speech_scores",
             export_spec="tiffin.export.specs:speech_spec_for", samples="tiffin.export.real_samples:speech_samples",
             agreement="tiffin.export.parity:TranscriptAgreement",
             benchmark_inputs="tiffin.export.benchmark:speech_inputs"),
    ]
}


def task_named(name: Any, where: str) -> Task:
    """The row of task `name`; TiffinError naming `where` (a file, an option) for any other."""
    if name not in TASKS:
        raise TiffinError(f"{where}: task {name!r} is not one of {', '.join(TASKS)}")
    return TASKS[name]
