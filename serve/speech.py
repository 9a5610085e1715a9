"""Speech recognition service: `POST /transcribe` (multipart field `audio`) -> transcript.

Two BentoML services: `SpeechRecognizer` (the public API: decode, mix to mono, resample, cut
long recordings into windows) and `SpeechModel` (one worker holding the ONNX Runtime session;
its `logits` API batches windows across concurrent requests, zero-padded, each cut back to its
own frames, so a batched answer equals the answer alone; with TIFFIN_BATCHING=0 each API worker
holds a session itself, a hop between processes less per request). Windows are stitched and
CTC-decoded as in `tiffin predict` (tiffin.chunking, tiffin.ctc).

Run: `tiffin serve ARTIFACT`, or `TIFFIN_ARTIFACT=DIR bentoml serve serve.speech:SpeechRecognizer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from serve.artifacts import ServedModel, served_artifact
from serve.request_timers import cancel_finished_request_timers
from serve.settings import read_settings
from serve.uploads import (
    UploadError, UploadLimit, check_upload, error_response, install_strict_form_parsing, media_error,
    model_call,
)
from tiffin.audio_io import audio_duration, read_audio, resample
from tiffin.chunking import stitch, window_starts
from tiffin.ctc import Vocabulary
from tiffin.errors import MediaError
from tiffin.inference import output_frames, pad_to_one_frame, pad_waves
from tiffin.spec import SpeechSpec

TASK = "speech-recognition"
# what BentoML needs when it builds the classes; each instance reads the rest when it starts
SETTINGS = read_settings()
install_strict_form_parsing()
cancel_finished_request_timers()


@bentoml.service(name="tiffin-speech-model", workers=1, traffic={"timeout": SETTINGS.timeout_s})
class SpeechModel:
    """The exported graph: mono waveforms in, CTC logits [frames, vocab] per waveform out."""

    def __init__(self) -> None:
        self.model = ServedModel(read_settings(), TASK)
        self.kernels = self.model.meta["preprocessing"]["conv_kernel"]
        self.strides = self.model.meta["preprocessing"]["conv_stride"]

    @bentoml.api(batchable=SETTINGS.batching, max_batch_size=SETTINGS.max_batch, max_latency_ms=SETTINGS.max_latency_ms)
    def logits(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        batch, lengths = pad_waves(waves)
        out = self.model(batch, lengths)
        return [out[i, : output_frames(int(n), self.kernels, self.strides)] for i, n in enumerate(lengths)]


@bentoml.service(name="tiffin-speech", workers=SETTINGS.workers, traffic={"timeout": SETTINGS.timeout_s})
class SpeechRecognizer:
    """Transcribes an uploaded recording with the artifact's vocabulary."""

    # batching on: one model worker batches every API worker's calls; off: each API worker
    # holds the session itself, which spares a request the hop between processes
    if SETTINGS.batching:
        model = bentoml.depends(SpeechModel)

    def __init__(self) -> None:
        self.settings = read_settings()
        if not SETTINGS.batching:
            self.model = SpeechModel()
        _, meta = served_artifact(self.settings, TASK)
        self.spec = SpeechSpec.from_dict(meta["preprocessing"])
        self.vocab = Vocabulary(tuple(meta["vocab"]))
        self.hop = int(np.prod(meta["preprocessing"]["conv_stride"]))
        self.conv = (meta["preprocessing"]["conv_kernel"], meta["preprocessing"]["conv_stride"])
        self.backbone = meta["backbone"]

    @bentoml.api
    def transcribe(self, audio: Path) -> dict[str, Any]:
        """Greedy CTC transcript of a recording (any rate, channels or format soundfile or FFmpeg reads)."""
        try:
            return self._transcribe(audio)
        except UploadError as err:
            return error_response(err)

    def _check_duration(self, seconds: float | None) -> None:
        limit = self.settings.max_audio_seconds
        if seconds is not None and seconds > limit:
            raise UploadError(422, f"audio: {seconds:.1f} s is longer than the limit of {limit:g} s "
                                   "(TIFFIN_MAX_AUDIO_SECONDS)")

    def _transcribe(self, audio: Path) -> dict[str, Any]:
        check_upload(audio, "audio")
        self._check_duration(audio_duration(audio))  # before decoding: a long upload costs no memory
        try:
            wave, rate = read_audio(audio)
        except MediaError as err:
            raise media_error(err, "audio") from None
        self._check_duration(len(wave) / rate)  # headers can understate
        wave = resample(wave, rate, self.spec.sample_rate)
        seconds = round(len(wave) / self.spec.sample_rate, 3)
        wave = pad_to_one_frame(wave, *self.conv)
        spec = self.spec
        starts = window_starts(len(wave), spec.sample_rate, self.hop, spec.chunk_seconds, spec.stride_seconds)
        chunk = int(spec.chunk_seconds * spec.sample_rate)
        windows = [wave[s : s + chunk] for s in starts]
        with model_call():
            logits = self.model.logits(windows)
        text = self.vocab.decode_logits(stitch([np.asarray(x) for x in logits], starts, self.hop,
                                                spec.stride_seconds * spec.sample_rate))
        return {"text": text, "duration_s": seconds, "backbone": self.backbone}


SpeechRecognizer.add_asgi_middleware(UploadLimit, max_bytes=SETTINGS.max_upload_bytes)
