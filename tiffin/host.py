"""The predictors, and opening an artifact on its runtime; torch-free.

A predictor holds a session (any callable from numpy inputs to numpy logits: an ONNX Runtime
session, a TorchScript module, a PyTorch network wrapped by tiffin.train.predict, or a BentoML
model service) and the artifact's or checkpoint's spec. Its `predict_file` does everything for
one file (decoding budget, probe and decode, model call, top-k labels or transcript, warnings,
word timestamps) and is the one per-file path: `predict` (what `tiffin predict`, `tiffin
evaluate`, the Python API's `.predict`/`.evaluate` and the benchmark run) loops over it, and both
services answer a request with it, so an answer is the same wherever it is computed.
`open_artifact` opens an exported model on its runtime. The numpy steps around the network
(clips, softmax averaging, padding, frame counts) are tiffin.inference's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tiffin.errors import MediaError, TiffinError
from tiffin.inference import output_frames, pad_to_one_frame, pad_waves, readable_warnings, top_labels, video_clips
from tiffin.spec import SpeechSpec, VideoSpec

Session = Callable[..., np.ndarray]


class VideoPredictor:
    """Top-k labels of videos: clips spread over each video, softmax averaged over them."""

    task = "video-classification"

    def __init__(self, session: Session, spec: VideoSpec, backbone: str):
        self.session, self.spec, self.backbone = session, spec, backbone

    def clips(self, file: str | Path, clips: int = 1, duration: float | None = None,
              span: tuple[float, float | None] = (0.0, None), budget=None) -> np.ndarray:
        """uint8 clips [N, T, S, S, 3] of one video (of the span `start`-`end` s of it), as validation
        decodes them, within `budget` (tiffin.limits.DecodeBudget: the file's, shared with its probe)."""
        return video_clips(file, self.spec, clips, duration, span, budget)

    def labels(self, clips: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        """The top-k labels of one video from its clips."""
        return top_labels(np.asarray(self.session(clips), dtype=np.float32), self.spec.labels, top_k)

    @classmethod
    def from_artifact(cls, meta: dict[str, Any], session: Session, windows_per_call: int | None = None
                      ) -> "VideoPredictor":
        # the labels tiffin.json's schema guarantees: its top-level list
        return cls(session, VideoSpec.from_dict({**meta["preprocessing"], "labels": meta["labels"]}), meta["backbone"])

    def predict_file(self, file: str | Path, top_k: int = 5, clips: int = 1,
                     span: tuple[float, float | None] = (0.0, None), limits=None) -> dict[str, Any]:
        """Everything for one video: `{"file", "labels": [{"label", "score"}], "clips", "duration_s"}`,
        with `start`/`end` for a span (seconds; None: the end) and `warnings` when the file is cut
        short (answered from its readable part). Decoded within one DecodeBudget of `limits` (a
        tiffin.limits.Limits; default: the TIFFIN_MAX_* settings), shared by the probe and every
        clip. `clips` and `duration_s` are for a service's answer; `predict` leaves them out.

        Raises:
            MediaError: the file cannot be read, a span outside it, or over a limit.
        """
        from tiffin.limits import DecodeBudget
        from tiffin.video_io import probe

        budget = DecodeBudget(str(file), limits)  # frame size from the headers, then every frame and the time
        info = probe(file, budget)
        warnings = readable_warnings(info, self.spec.clip_duration)
        batch = self.clips(file, clips, info.duration, span, budget)
        return {"file": str(file), **_span_fields(span), "labels": self.labels(batch, top_k), "clips": len(batch),
                "duration_s": round(info.duration, 3), **({"warnings": warnings} if warnings else {})}

    def predict(self, files: list[str | Path], top_k: int = 5, clips: int = 1,
                spans: list[tuple[float, float | None]] | None = None, limits=None) -> list[dict[str, Any]]:
        """`[{"file", "labels": [{"label", "score"}]}]` in the order given, each of its span (start, end
        seconds; None: the end) when `spans` are given, and `warnings` when a file is cut short (answered
        from its readable part); an unreadable file gets `error` (predict_file, file by file)."""
        return [_listed(self.predict_file, file, span, ("clips", "duration_s"), top_k=top_k, clips=clips,
                        limits=limits)
                for file, span in zip(files, spans or [(0.0, None)] * len(files))]


def _listed(predict_file: Callable[..., dict[str, Any]], file: str | Path, span: tuple[float, float | None],
            service_only: tuple[str, ...], **options: Any) -> dict[str, Any]:
    """One entry of `predict`'s list: predict_file's answer less the keys only services answer,
    or `{"file", "error"}` for a file that cannot be read."""
    try:
        result = predict_file(file, span=span, **options)
    except MediaError as err:
        return {"file": str(file), "error": err.reason}
    return {k: v for k, v in result.items() if k not in service_only}


def _span_fields(span: tuple[float, float | None]) -> dict[str, float]:
    """`start`/`end` of an answer for a part of a file; nothing for the whole of it."""
    start, end = span
    return {} if (start, end) == (0.0, None) else {"start": start, **({} if end is None else {"end": end})}


class WaveLogits:
    """Waveforms -> each one's own CTC logits [frames, vocab]: zero-padded into one batch, run, and
    cut back to the frames each waveform owns (the speech model service's `logits` API)."""

    def __init__(self, session: Session, kernels: tuple[int, ...], strides: tuple[int, ...]):
        self.session, self.kernels, self.strides = session, tuple(kernels), tuple(strides)

    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        batch, lengths = pad_waves(waves)
        out = np.asarray(self.session(batch, lengths))
        return [out[i, : output_frames(int(n), self.kernels, self.strides)] for i, n in enumerate(lengths)]


class SpeechPredictor:
    """Greedy (or beam) CTC transcripts. A recording is streamed (tiffin.speech_stream): decoded,
    resampled, cut into the spec's overlapping windows, run `windows_per_call` windows per model
    call, stitched and decoded as it goes, so memory does not grow with its length; silent windows
    are skipped (TIFFIN_SILENCE_DBFS)."""

    task = "speech-recognition"

    def __init__(self, logits: Callable[[list[np.ndarray]], list[np.ndarray]], spec: SpeechSpec, backbone: str,
                 kernels: tuple[int, ...], strides: tuple[int, ...], windows_per_call: int | None = None):
        from tiffin.ctc import Vocabulary

        self.logits, self.spec, self.backbone = logits, spec, backbone
        self.session = getattr(logits, "session", None)  # None when the model runs elsewhere (a service)
        self.kernels, self.strides = tuple(kernels), tuple(strides)
        self.hop = int(np.prod(self.strides))
        self.vocab = Vocabulary.of_spec(spec)
        self.windows_per_call = windows_per_call
        self.decoder = None  # greedy; a tiffin.ctc_beam.BeamDecoder with use_beam()
        from tiffin.speech_stream import silence_threshold

        self.silence_dbfs = silence_threshold()  # None: every window goes to the model

    def use_beam(self, options) -> None:
        """Decode with beam search over a word list / KenLM model (tiffin.ctc_beam.BeamOptions)."""
        from tiffin.ctc_beam import BeamDecoder

        self.decoder = BeamDecoder(self.vocab, options)

    @property
    def seconds_per_frame(self) -> float:
        return self.hop / self.spec.sample_rate

    def windows(self, wave: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
        """(start samples, windows) a recording is run in; a blip shorter than one frame is padded."""
        from tiffin.chunking import window_starts

        spec = self.spec
        wave = pad_to_one_frame(wave, self.kernels, self.strides)
        starts = window_starts(len(wave), spec.sample_rate, self.hop, spec.chunk_seconds, spec.stride_seconds)
        chunk = int(spec.chunk_seconds * spec.sample_rate)
        return starts, [wave[s : s + chunk] for s in starts]

    def stitch(self, window_logits: list[np.ndarray], starts: list[int]) -> np.ndarray:
        from tiffin.chunking import stitch

        return stitch([np.asarray(x) for x in window_logits], starts, self.hop,
                      self.spec.stride_seconds * self.spec.sample_rate)

    def recording_logits(self, wave: np.ndarray) -> np.ndarray:
        """CTC logits [frames, vocab] of a whole recording."""
        starts, windows = self.windows(wave)
        step = self.windows_per_call or len(windows)
        logits = [x for k in range(0, len(windows), step) for x in self.logits(windows[k : k + step])]
        return self.stitch(logits, starts)

    def decode(self, logits: np.ndarray) -> str:
        """The transcript of a recording's logits, greedy or with the beam decoder."""
        return self.vocab.decode_logits(logits) if self.decoder is None else self.decoder.decode(logits)

    def transcribe(self, wave: np.ndarray) -> str:
        return self.decode(self.recording_logits(wave))

    def transcription(self, windows_per_call: int = 1):
        """A tiffin.speech_stream.Transcription: push sample blocks at the spec's rate, get segments.

        One window per model call by default: a call's memory is the model's activations for its
        windows (1.5 GB for eight 30 s windows of the embedded model on ONNX Runtime, 0.3 GB for one),
        and one window costs no more time per second of audio on a CPU; a service's model worker
        batches windows across requests."""
        from tiffin.speech_stream import Transcription

        spec = self.spec
        return Transcription(self.logits, self.vocab, spec.sample_rate, self.kernels, self.strides,
                             spec.chunk_seconds, spec.stride_seconds, decoder=self.decoder,
                             windows_per_call=windows_per_call, silence_dbfs=self.silence_dbfs)

    @classmethod
    def from_artifact(cls, meta: dict[str, Any], session: Session, windows_per_call: int | None = None
                      ) -> "SpeechPredictor":
        pre = meta["preprocessing"]
        kernels, strides = tuple(pre["conv_kernel"]), tuple(pre["conv_stride"])
        return cls(WaveLogits(session, kernels, strides), SpeechSpec.from_dict({**pre, "vocab": meta["vocab"]}),
                   meta["backbone"], kernels, strides, windows_per_call)

    def predict_file(self, file: str | Path, top_k: int = 5, clips: int = 1, timestamps: bool = False,
                     span: tuple[float, float | None] = (0.0, None), limits=None) -> dict[str, Any]:
        """Everything for one recording: `{"file", "text", "duration_s"}`, with `start`/`end` for a
        span (seconds; None: the end), `words` (word, start, end in seconds of the file; greedy
        decoding adds `conf`, the mean probability of its letters) when `timestamps`, and `warnings`
        when it is cut short. Streamed (tiffin.speech_stream): memory does not grow with the
        recording's length. Decoded within a DecodeBudget of `limits` (a tiffin.limits.Limits;
        default: the TIFFIN_MAX_* settings): refused before decoding when the headers declare more
        audio than the limit, cut off at it when they understate (`top_k` and `clips` are video
        options, accepted so every predictor is called alike).

        Raises:
            MediaError: the file cannot be read, a span outside it, or over a limit.
        """
        from tiffin.audio_io import audio_truncation, stream_audio
        from tiffin.limits import DecodeBudget
        from tiffin.speech_stream import transcribe_blocks

        run = self.transcription()
        blocks = stream_audio(file, self.spec.sample_rate, *span, budget=DecodeBudget(str(file), limits))
        words = [w for segment in transcribe_blocks(blocks, run) for w in segment.words]
        result = {"file": str(file), **_span_fields(span), "text": " ".join(w["word"] for w in words)}
        if timestamps:
            result["words"] = [{**w, "start": round(w["start"] + span[0], 3), "end": round(w["end"] + span[0], 3)}
                               for w in words]
        seconds = run.samples / self.spec.sample_rate
        cut = audio_truncation(file, seconds) if span == (0.0, None) else None
        return {**result, "duration_s": round(seconds, 3),
                **({"warnings": [f"{cut}; transcribed that part"]} if cut else {})}

    def predict(self, files: list[str | Path], top_k: int = 5, clips: int = 1, timestamps: bool = False,
                spans: list[tuple[float, float | None]] | None = None, limits=None) -> list[dict[str, Any]]:
        """`[{"file", "text", "duration_s"}]` in the order given, each of its span (start, end
        seconds; None: the end) when `spans` are given, with `words` (word, start, end in seconds
        of the file) when `timestamps` and a beam decoder is set, and `warnings` when a recording is cut
        short; an unreadable file gets `error` (predict_file, file by file; `top_k` and `clips` are
        video options, accepted so every predictor is called alike)."""
        return [_listed(self.predict_file, file, span, (), timestamps=timestamps, limits=limits)
                for file, span in zip(files, spans or [(0.0, None)] * len(files))]


Predictor = VideoPredictor | SpeechPredictor


def predictor_for(meta: dict[str, Any], session: Session, windows_per_call: int | None = None) -> Predictor:
    """The predictor of an artifact's task over `session`, from its tiffin.json."""
    from tiffin.tasks import task_named

    return task_named(meta["task"], "tiffin.json").predictor.from_artifact(meta, session, windows_per_call)


def chosen_runtime(path: str | Path, meta: dict[str, Any], runtime: str | None = None):
    """The row of tiffin.runtimes an artifact runs on: `runtime`, else the one tiffin.json records
    (`tiffin benchmark --record`), else the format's default."""
    from tiffin.runtimes import runtime_for

    chosen = runtime_for(meta["format"], runtime or meta.get("runtime"))
    recorded = chosen.name
    while runtime is None and chosen.fallback and (reason := chosen.needs()):
        # recorded on a machine that had what this one lacks (tiffin benchmark --record on an AMX
        # box with OpenVINO, run elsewhere): run the row it stands in for rather than refuse the
        # artifact (openvino-bf16 -> openvino -> onnxruntime, as far as needed)
        chosen = runtime_for(meta["format"], chosen.fallback)
        logging.getLogger("tiffin").warning(f"{path}: recorded runtime {recorded} cannot run here ({reason}); "
                                            f"running on {chosen.name}")
    return chosen


def open_session(path: str | Path, meta: dict[str, Any], device: str = "auto", threads: int | None = None,
                 spinning: bool = True, runtime: str | None = None, trust: bool = False) -> Session:
    """A session over an artifact's model file, taking any batch size, on `runtime` (a row of
    tiffin.runtimes), else the one tiffin.json records (`tiffin benchmark --record`), else the
    format's default. The one place every artifact is opened, so the one gate of trust: a
    program artifact (TorchScript, mobile, .pt2) opens only when a trusted key signed it or
    `trust` (the caller's explicit `--trust` / trust=True) or $TIFFIN_TRUST names it.

    Raises:
        TiffinError: an untrusted program artifact, or its runtime not installed.
    """
    from tiffin.artifact_json import fixed_batch
    from tiffin.runtimes import FixedBatch

    chosen = chosen_runtime(path, meta, runtime)
    if chosen.program:
        from tiffin.trust import require_trust

        require_trust(path, meta["format"], trust)
    try:
        session = chosen.open(Path(path) / meta["model_file"], device, threads, spinning)
    except ImportError as exc:
        raise TiffinError(f"{path}: {chosen.name} runs it, and {exc.name} is not installed: "
                          f"pip install '{chosen.install}'") from None
    batch = fixed_batch(meta)
    return session if batch is None else FixedBatch(session, batch)


def open_artifact(path: str | Path, device: str = "auto", threads: int | None = None, spinning: bool = True,
                  windows_per_call: int | None = 8, runtime: str | None = None, trust: bool = False
                  ) -> tuple[Predictor, dict[str, Any]]:
    """(predictor, tiffin.json) of an artifact folder, read with every check of tiffin.artifact_json, on
    `runtime` (open_session; `trust`: the caller trusts this program artifact explicitly); a
    speech artifact exported with a word list / LM decodes with them."""
    from tiffin.artifact_json import read_artifact

    meta = read_artifact(path)
    predictor = predictor_for(meta, open_session(path, meta, device, threads, spinning, runtime, trust),
                              windows_per_call)
    use_recorded_decoder(predictor, path, meta)
    return predictor, meta


def use_recorded_decoder(predictor: Predictor, path: str | Path, meta: dict[str, Any]) -> None:
    """Give `predictor` the beam decoder tiffin.json records (`tiffin export --words/--lm`), if any."""
    if meta.get("decoder"):
        from tiffin.ctc_beam import options_of

        predictor.use_beam(options_of(Path(path), meta["decoder"]))
