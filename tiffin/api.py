"""The Python API past training: `tiffin.load` and `Artifact` (what every model adds, `predict`,
`export`, `serve`, is tiffin.model_api's). The CLI's commands call the same functions.

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

from pathlib import Path
from typing import Any, Sequence



def load(path: str | Path, runtime: str | None = None, trust: bool = False) -> Any:
    """Open what tiffin reads: an artifact folder (an `Artifact`, torch-free, run on `runtime`: a
    row of tiffin.runtimes.RUNTIMES that runs its format; default: the one tiffin.json
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
    from tiffin.tasks import TASKS

    loaded = _open(path, runtime, trust)
    if isinstance(loaded, Artifact):
        return loaded
    # the task's model class (tiffin.video, tiffin.speech: torch), named by its row: they build on this module
    return TASKS[loaded.task].part("model_class").from_loaded(loaded, source=path)


def open_predictor(path: str | Path, runtime: str | None = None, trust: bool = False, *,
                   option: str | None = None):
    """The host predictor (tiffin.host) of anything `load` opens, opened now: an artifact on its
    runtime, else the PyTorch model. What `tiffin predict` and `tiffin evaluate` run, through the
    same `_predict` / `_evaluate` as `Artifact.predict` and `model.predict`. `option`: how the
    caller's door spells the runtime in an error (the CLI's `--runtime openvino`).

    Raises:
        TiffinError: not something tiffin reads, or a runtime given for a PyTorch model.
    """
    return _open(path, runtime, trust, option=option, check=False).predictor()


def _open(path: str | Path, runtime: str | None = None, trust: bool = False, *, option: str | None = None,
          check: bool = True):
    """The one dispatch of what tiffin reads: an `Artifact` for an artifact folder (read with every
    check of tiffin.json and the model file when `check`; opening its predictor checks them in any
    case), else the tiffin.train.predict LoadedModel of a checkpoint, embedded model or Hugging Face
    folder (torch)."""
    from tiffin.errors import TiffinError

    if Path(path).is_dir() and (Path(path) / "tiffin.json").is_file():
        if check:
            from tiffin.artifact_json import read_artifact

            read_artifact(path)  # every check of tiffin.json and the model file, now
        return Artifact(path, runtime=runtime, trust=trust)
    if runtime is not None:
        if option is not None:
            raise TiffinError(f"{option}: runtimes run exported artifacts; {path} is a PyTorch model "
                              "(tiffin export it first)")
        raise TiffinError(f"runtime={runtime!r}: runtimes run exported artifacts; {path} is a PyTorch model")
    from tiffin.train.predict import load_model

    return load_model(path)


def is_pytorch_model(path: str | Path) -> bool:
    """Whether `path` names a PyTorch model tiffin reads (an embedded model name, a file: a
    checkpoint, a Hugging Face folder or Hub id) rather than an artifact folder, which `tiffin serve`
    and `model.serve()` export to ONNX first. Anything else is read as an artifact, whose errors
    say what one is."""
    from tiffin.train.backbones import EMBEDDED_MODELS
    from tiffin.train.weights import is_hub_id

    if str(path) in EMBEDDED_MODELS or is_hub_id(str(path)):  # a Hub id: downloaded, then as its folder
        return True
    path = Path(path)
    if path.is_file():
        return True
    return path.is_dir() and not (path / "tiffin.json").is_file() and (path / "config.json").is_file()


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
        from tiffin.artifact_json import read_artifact

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
        for video, `[{"file", "text", "duration_s"}]` for speech (with `words`, each word's start and
        end, when `timestamps`); an unreadable file gets `error`. `decoding`: speech's decoder options
        as `tiffin predict` takes them (`decoder="auto"|"greedy"|"beam"`, `words`, `lm`, `beam_width`,
        `lm_weight`, `word_score`); "auto" uses the word list / LM the artifact was exported with.
        `start=`/`end=` (seconds) predict that part of each file, as `tiffin predict --start/--end`;
        `keep_silence=True` sends silent windows to the model too (`--keep-silence`)."""
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
        from tiffin.export.recheck import check_artifact

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
    """`predictor.predict` with the decoder `decoding` asks for, the predictor's own restored after:
    the one implementation behind `Artifact.predict`, `model.predict` and `tiffin predict`.
    `files`: paths (one str or Path is one file); `decoding`: tiffin.ctc_beam.decoder_choice's
    options, and `start` / `end`: the seconds of each file to predict (`tiffin predict --start/--end`).

    Raises:
        TiffinError: bad decoder options, or `end` not after `start`.
    """
    from tiffin.ctc_beam import decoder_choice
    from tiffin.errors import TiffinError
    from tiffin.train.predict import with_decoder

    decoding = dict(decoding)
    keep_silence = bool(decoding.pop("keep_silence", False))
    start, end = float(decoding.pop("start", 0.0) or 0.0), decoding.pop("end", None)
    end = None if end is None else float(end)
    if start < 0:
        raise TiffinError(f"start={start:g}: give the seconds of each file to start from (>= 0)")
    if end is not None and end <= start:
        raise TiffinError(f"end={end:g} is not after start={start:g}")
    files = [files] if isinstance(files, (str, Path)) else files
    own, silence = getattr(predictor, "decoder", None), getattr(predictor, "silence_dbfs", None)
    try:
        with_decoder(predictor, decoder_choice(**decoding))
        speech = hasattr(predictor, "decoder")
        if speech and keep_silence:
            predictor.silence_dbfs = None  # every window to the model
        extra = {"timestamps": True} if timestamps and speech else {}
        return predictor.predict([Path(f) for f in files], top_k=top_k, clips=clips,
                                 spans=[(start, end)] * len(files), **extra)
    finally:
        if hasattr(predictor, "decoder"):
            predictor.decoder, predictor.silence_dbfs = own, silence


def _evaluate(predictor, data, audio_column: str, text_column: str, clips: int, decoding: dict[str, Any],
              tune: bool = False, name: str | None = None):
    """tiffin.train.evaluate's scores of `predictor` on `data` with the decoder `decoding` asks for,
    the predictor's own restored after: the one implementation behind `Artifact.evaluate`,
    `model.evaluate` and `tiffin evaluate`. `name`: the answer's `model` (default: the backbone)."""
    from tiffin.ctc_beam import decoder_choice
    from tiffin.train.evaluate import evaluate

    own = getattr(predictor, "decoder", None)
    try:
        return evaluate(predictor, Path(data), audio_column, text_column, clips, beam=decoder_choice(**decoding),
                        tune=tune, name=name)
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
