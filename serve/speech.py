"""Speech recognition service: `POST /transcribe` (multipart field `audio`) -> transcript.

Two BentoML services: `SpeechRecognizer` (the public API: decode, mix to mono, resample, cut
long recordings into windows) and `SpeechModel` (one worker holding the ONNX Runtime session;
its `logits` API batches windows across concurrent requests, zero-padded, each cut back to its
own frames, so a batched answer equals the answer alone). Windows are stitched and CTC-decoded
as in `tiffin predict` (tiffin.chunking, tiffin.ctc).

Run: `tiffin serve ARTIFACT`, or `TIFFIN_ARTIFACT=DIR bentoml serve serve.speech:SpeechRecognizer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from serve.artifacts import run_fixed_batches, served_artifact
from serve.settings import read_settings
from serve.uploads import (
    UploadError, UploadLimit, check_upload, error_response, install_strict_form_parsing, media_error,
)
from tiffin.artifact import fixed_batch
from tiffin.audio_io import audio_duration, read_audio, resample
from tiffin.chunking import stitch, window_starts
from tiffin.ctc import Vocabulary
from tiffin.errors import MediaError
from tiffin.inference import output_frames, pad_waves
from tiffin.spec import SpeechSpec

TASK = "speech-recognition"
# what BentoML needs when it builds the classes; each instance reads the rest when it starts
SETTINGS = read_settings()
install_strict_form_parsing()


@bentoml.service(name="tiffin-speech-model", workers=1, traffic={"timeout": SETTINGS.timeout_s})
class SpeechModel:
    """The exported graph: mono waveforms in, CTC logits [frames, vocab] per waveform out."""

    def __init__(self) -> None:
        from tiffin.onnx_session import OnnxSession

        settings = read_settings()
        path, meta = served_artifact(settings, TASK)
        self.session = OnnxSession(path / meta["model_file"], settings.device, settings.threads or None)
        self.batch_size = fixed_batch(meta)
        self.kernels = meta["preprocessing"]["conv_kernel"]
        self.strides = meta["preprocessing"]["conv_stride"]

    @bentoml.api(batchable=SETTINGS.batching, max_batch_size=SETTINGS.max_batch, max_latency_ms=SETTINGS.max_latency_ms)
    def logits(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        batch, lengths = pad_waves(waves)
        out = run_fixed_batches(self.session, self.batch_size, batch, lengths)
        return [out[i, : output_frames(int(n), self.kernels, self.strides)] for i, n in enumerate(lengths)]


@bentoml.service(name="tiffin-speech", workers=SETTINGS.workers, traffic={"timeout": SETTINGS.timeout_s})
class SpeechRecognizer:
    """Transcribes an uploaded recording with the artifact's vocabulary."""

    model = bentoml.depends(SpeechModel)

    def __init__(self) -> None:
        self.settings = read_settings()
        _, meta = served_artifact(self.settings, TASK)
        self.spec = SpeechSpec.from_dict(meta["preprocessing"])
        self.vocab = Vocabulary(tuple(meta["vocab"]))
        self.hop = int(np.prod(meta["preprocessing"]["conv_stride"]))
        self.backbone = meta["backbone"]

    @bentoml.api
    def transcribe(self, audio: Path) -> dict[str, Any]:
        """Greedy CTC transcript of a recording (any rate, channels or format soundfile or FFmpeg reads)."""
        try:
            return self._transcribe(audio)
        except UploadError as err:
            return error_response(err)

    def _transcribe(self, audio: Path) -> dict[str, Any]:
        check_upload(audio, "audio")
        limit = self.settings.max_audio_seconds
        announced = audio_duration(audio)
        try:
            if announced is not None and announced > limit:
                raise UploadError(422, f"audio: {announced:.1f} s is longer than the limit of {limit:g} s "
                                       f"(TIFFIN_MAX_AUDIO_SECONDS)")
            wave, rate = read_audio(audio)
        except MediaError as err:
            raise media_error(err, "audio") from None
        duration = len(wave) / rate
        if duration > limit:  # headers can understate
            raise UploadError(422, f"audio: {duration:.1f} s is longer than the limit of {limit:g} s "
                                   f"(TIFFIN_MAX_AUDIO_SECONDS)")
        wave = resample(wave, rate, self.spec.sample_rate)
        spec = self.spec
        starts = window_starts(len(wave), spec.sample_rate, self.hop, spec.chunk_seconds, spec.stride_seconds)
        chunk = int(spec.chunk_seconds * spec.sample_rate)
        windows = [wave[s : s + chunk] for s in starts]
        logits = self.model.logits(windows)
        text = self.vocab.decode_logits(stitch([np.asarray(x) for x in logits], starts, self.hop,
                                                spec.stride_seconds * spec.sample_rate))
        return {"text": text, "duration_s": round(len(wave) / spec.sample_rate, 3), "backbone": self.backbone}


SpeechRecognizer.add_asgi_middleware(UploadLimit, max_bytes=SETTINGS.max_upload_bytes)
