"""The Python API past training: `tiffin.load`, `Artifact`, and what every model adds
(`predict`, `export`, `serve`). The CLI's commands call the same functions.

Like the CLI, this module wires the stages together (tiffin.train, tiffin.export,
tiffin.serve); each is imported where it is used, so opening and serving an ONNX artifact
needs only the base install and the serving extra, never torch.

Example:
    >>> import tiffin
    >>> artifact = tiffin.load("runs/video/export/onnx-fp32")
    >>> artifact.predict(["clip.mp4"])
    >>> with artifact.serve(port=0) as server:
    ...     print(server.url)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence



def load(path: str | Path, runtime: str | None = None, trust: bool = False) -> Any:
    """Open what tiffin reads: an artifact folder (an `Artifact`, torch-free, run on `runtime`:
    "onnxruntime", "openvino", "openvino-bf16" or "tensorrt" for ONNX; default: the one tiffin.json
    records; `trust=True`: you trust this TorchScript / mobile / .pt2 artifact, which is a program,
    though no key trusted here signed it, see tiffin.trust), or a checkpoint, an
    embedded model name (`tiffin/tiny-motion`, `tiffin/tiny-en`) or a Hugging Face speech folder
    (a `tiffin.video.VideoClassifier` or `tiffin.speech.SpeechRecognition`, with torch).

    Example:
        >>> model = tiffin.load("tiffin/tiny-en")
        >>> model.predict(["hello.wav"])

    Raises:
        TiffinError: not something tiffin reads, with what to give instead.
    """
    from tiffin.artifact import read_artifact
    from tiffin.errors import TiffinError

    if Path(path).is_dir() and (Path(path) / "tiffin.json").is_file():
        read_artifact(path)  # every check of tiffin.json and the model file, now
        return Artifact(path, runtime=runtime, trust=trust)
    if runtime is not None:
        raise TiffinError(f"runtime={runtime!r}: runtimes run exported artifacts; {path} is a PyTorch model")
    from tiffin.train.predict import load_model

    loaded = load_model(path)
    if loaded.task == "video-classification":
        from tiffin.video import VideoClassifier

        return VideoClassifier.from_loaded(loaded, source=path)
    from tiffin.speech import SpeechRecognition

    return SpeechRecognition.from_loaded(loaded, source=path)


class Artifact:
    """An exported model folder (model file + tiffin.json), as `tiffin export` or `model.export()`
    wrote it. Everything here runs on the artifact's runtime (ONNX Runtime for ONNX), torch-free,
    except `check()` and `benchmark()`, which compare against the PyTorch model it came from.

    Example:
        >>> artifact = model.export(format="onnx", out="exports/video")
        >>> artifact.predict(["a.mp4"]), artifact.meta["parity"]
    """

    def __init__(self, path: str | Path, model: Any = None, runtime: str | None = None, trust: bool = False):
        """`model`: the in-memory model it was exported from, which `check()` compares against
        when tiffin.json records no source file; `runtime`: a row of tiffin.runtimes to run on
        (default: the one tiffin.json records, else the format's first); `trust`: open it even
        when it is a program artifact no trusted key signed (tiffin.trust)."""
        from tiffin.artifact import read_artifact

        self.path, self.runtime, self.trust = Path(path), runtime, trust
        self.meta: dict[str, Any] = read_artifact(self.path, check_model_file=False)
        self.model = model
        self._predictor = None

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def labels(self) -> list[str] | None:
        return self.meta.get("labels")

    def __repr__(self) -> str:
        return f"Artifact({str(self.path)!r}: {self.task}, {self.meta['format']} {self.meta['precision']})"

    def predictor(self):
        """The host predictor over this artifact's session (opened once, on first use)."""
        if self._predictor is None:
            from tiffin.host import open_artifact

            self._predictor = open_artifact(self.path, runtime=self.runtime, trust=self.trust)[0]
        return self._predictor

    def predict(self, files: Sequence[str | Path], top_k: int = 5, clips: int = 1, timestamps: bool = False,
                **decoding: Any) -> list[dict[str, Any]]:
        """What `tiffin predict ARTIFACT FILES --json` prints: `[{"file", "labels": [{"label", "score"}]}]`
        for video, `[{"file", "text", "duration_s"}]` for speech (with `words` when `timestamps` and
        a beam decoder is used); an unreadable file gets `error`. `decoding`: speech's decoder options
        as `tiffin predict` takes them (`decoder="auto"|"greedy"|"beam"`, `words`, `lm`, `beam_width`,
        `lm_weight`, `word_score`); "auto" uses the word list / LM the artifact was exported with."""
        return _predict(self.predictor(), files, top_k, clips, timestamps, decoding)

    def evaluate(self, data: str | Path, audio_column: str = "speech_files", text_column: str = "targets",
                 clips: int = 1, tune: bool = False, **decoding: Any) -> dict[str, Any]:
        """What `tiffin evaluate ARTIFACT DATA` prints: CER/WER on a speech CSV, accuracy on a class
        folder; with `tune` (and `decoder="beam"`), the decoder settings with the lowest WER on DATA."""
        return _evaluate(self.predictor(), data, audio_column, text_column, clips, decoding, tune)

    def check(self, data: str | Path | None = None, source: str | Path | None = None) -> dict[str, Any]:
        """Re-run the parity check against the model it came from (`tiffin check`): `source`, else
        the one tiffin.json records, else the in-memory model that exported it.

        Raises:
            ParityError: the artifact no longer matches.
        """
        from tiffin.export.artifact import check_artifact

        recorded = self.meta.get("source") or {}
        if source is None and self.model is not None and not (recorded.get("relative") or recorded.get("embedded")):
            return check_artifact(self.path, Path(data) if data else None, loaded=self.model.loaded(),
                                  runtime=self.runtime, trust=self.trust)
        return check_artifact(self.path, Path(data) if data else None, Path(source) if source else None,
                              runtime=self.runtime, trust=self.trust)

    def benchmark(self, batches: Sequence[int] = (1,), runs: int = 10, data: str | Path | None = None
                  ) -> list[dict[str, Any]]:
        """Time this artifact against PyTorch eager fp32 (`tiffin benchmark ARTIFACT`): one row per
        (runtime, batch) with latency, items/s and speed-up."""
        from tiffin.export.benchmark import BenchOptions, benchmark

        return benchmark(BenchOptions(self.path, batches=list(batches), data=Path(data) if data else None, runs=runs,
                                      trust=self.trust))

    def serve(self, port: int = 3000, host: str = "127.0.0.1", workers: int = 1, **settings: Any):
        """Start `bentoml serve` on this artifact as a child process, ready when it returns.

        `port=0` picks a free port; `settings`: TIFFIN_* variables without the prefix, such as
        `max_upload_mb=20`, `batching=False` or `runtime="openvino"` (default: this Artifact's).

        Returns:
            a `tiffin.serve.server.Server` (`url`, `stop()`, a context manager).
        """
        from tiffin.serve.server import start

        if self.runtime is not None:
            settings.setdefault("runtime", self.runtime)
        return start(self.path, host, port, workers, _settings(settings))

    def build(self, name: str | None = None, gpu: bool = False) -> tuple[str, Path]:
        """Store this artifact as a BentoML model and build a torch-free bento (`tiffin build`):
        (bento tag, its Dockerfile)."""
        from tiffin.serve.commands import build

        return build(self.path, name, gpu)


def _predict(predictor, files, top_k: int, clips: int, timestamps: bool, decoding: dict[str, Any]):
    """`predictor.predict` with the decoder `decoding` asks for, the predictor's own restored after."""
    from tiffin.ctc_beam import decoder_choice
    from tiffin.train.predict import with_decoder

    own = getattr(predictor, "decoder", None)
    try:
        with_decoder(predictor, decoder_choice(**decoding))
        extra = {"timestamps": True} if timestamps and getattr(predictor, "decoder", None) is not None else {}
        return predictor.predict([Path(f) for f in files], top_k=top_k, clips=clips, **extra)
    finally:
        if hasattr(predictor, "decoder"):
            predictor.decoder = own


def _evaluate(predictor, data, audio_column: str, text_column: str, clips: int, decoding: dict[str, Any],
              tune: bool = False):
    from tiffin.ctc_beam import decoder_choice
    from tiffin.train.evaluate import evaluate

    own = getattr(predictor, "decoder", None)
    try:
        return evaluate(predictor, Path(data), audio_column, text_column, clips, beam=decoder_choice(**decoding),
                        tune=tune)
    finally:
        if hasattr(predictor, "decoder"):
            predictor.decoder = own


def _settings(options: dict[str, Any]) -> dict[str, str]:
    """`max_upload_mb=20, batching=False` -> {"TIFFIN_MAX_UPLOAD_MB": "20", "TIFFIN_BATCHING": "0"}."""
    out = {}
    for key, value in options.items():
        name = key.upper() if key.upper().startswith("TIFFIN_") else f"TIFFIN_{key.upper()}"
        out[name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return out


class ModelAPI:
    """What tiffin's LightningModules add to training: `predict`, `export`, `serve`.

    The class using it provides `loaded()` (a tiffin.train.predict LoadedModel over its network,
    in eval mode) and `source` (the checkpoint or name it was loaded from, or None).
    """

    source: str | Path | None = None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, map_location: Any = None, **kwargs: Any):
        """A checkpoint written by `Trainer.save_checkpoint` or `tiffin train` (Lightning's loader),
        remembered as the model's source (what `export` records in tiffin.json)."""
        model = super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)
        model.source = Path(checkpoint_path)
        return model

    def predictor(self):
        """The host predictor over this model in PyTorch: the path `tiffin predict` takes."""
        return self.loaded().predictor()

    def predict(self, files: Sequence[str | Path], top_k: int = 5, clips: int = 1, timestamps: bool = False,
                **decoding: Any) -> list[dict[str, Any]]:
        """What `tiffin predict CHECKPOINT FILES --json` prints (see `Artifact.predict`; speech decodes
        greedily unless `decoder="beam"` with `words=`/`lm=`)."""
        was_training = self.training
        try:
            return _predict(self.predictor(), files, top_k, clips, timestamps, decoding)
        finally:
            self.train(was_training)

    def evaluate(self, data: str | Path, audio_column: str = "speech_files", text_column: str = "targets",
                 clips: int = 1, tune: bool = False, **decoding: Any) -> dict[str, Any]:
        """What `tiffin evaluate CHECKPOINT DATA` prints: CER/WER on a speech CSV, accuracy on a class
        folder; with `tune` (and `decoder="beam"`), the decoder settings with the lowest WER on DATA."""
        was_training = self.training
        try:
            return _evaluate(self.predictor(), data, audio_column, text_column, clips, decoding, tune)
        finally:
            self.train(was_training)

    def export(self, format: str = "onnx", precision: str = "fp32", out: str | Path | None = None, *,
               force: bool = False, check_data: str | Path | None = None, calibration_data: str | Path | None = None,
               batch: int | None = None, opset: int | None = None, words: str | Path | None = None,
               lm: str | Path | None = None, beam_width: int = 50, lm_weight: float = 2.0, word_score: float = 0.0,
               hotwords: Sequence[str] = (), hotword_weight: float = 5.0,
               tune_on: str | Path | None = None) -> Artifact:
        """Export behind the parity gate (`tiffin export`): the artifact, or nothing written.

        `out` defaults to runs/BACKBONE/export/FORMAT-PRECISION. `words`/`lm`: a word list and
        KenLM model a speech artifact decodes with, with the beam's settings (`tiffin export`'s
        options); `tune_on`: a dev set on which lm_weight / word_score are chosen first.

        Example:
            >>> artifact = model.export(format="onnx", precision="fp32", out="exports/video")

        Raises:
            ParityError: the exported model does not match this one (its type says how:
                ShapeMismatch, ToleranceExceeded, AgreementTooLow).
            TiffinError: bad options.
        """
        from tiffin.errors import TiffinError
        from tiffin.export.artifact import ExportOptions, export_model

        beam = None
        if words is not None or lm is not None:
            from tiffin.ctc_beam import BeamOptions

            beam = BeamOptions(Path(words) if words else None, Path(lm) if lm else None, beam_width, lm_weight,
                               word_score, hotwords=tuple(hotwords), hotword_weight=hotword_weight)
        elif hotwords or tune_on is not None:
            raise TiffinError("export: hotwords= and tune_on= need words= (and lm=): they set the beam decoder")
        if out is None:
            out = Path("runs") / Path(str(self.hparams.backbone)).name / "export" / f"{format}-{precision}"
        was_training = self.training
        try:
            if tune_on is not None:
                from tiffin.train.evaluate import tuned_beam

                beam = tuned_beam(self.predictor(), Path(tune_on), beam)[0]
            path, _ = export_model(ExportOptions(
                self.source, format, precision, opset, Path(out), Path(check_data) if check_data else None,
                Path(calibration_data) if calibration_data else None, force, batch, beam), loaded=self.loaded())
        finally:
            self.train(was_training)
        return Artifact(path, model=self)

    def serve(self, port: int = 3000, host: str = "127.0.0.1", workers: int = 1, **settings: Any):
        """Export to ONNX fp32 (behind the parity gate) in a temporary folder and serve that, torch-free,
        as a child process; the folder goes when the server is stopped.

        Example:
            >>> with model.serve(port=0) as server:
            ...     requests.post(server.url + "/classify", files={"file": open("a.mp4", "rb")})
        """
        from tiffin.serve.server import start

        folder = Path(tempfile.mkdtemp(prefix="tiffin-serve-model-"))
        artifact = self.export("onnx", "fp32", folder / "artifact")
        try:
            return start(artifact.path, host, port, workers, _settings(settings), cleanup=[folder])
        except BaseException:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            raise
