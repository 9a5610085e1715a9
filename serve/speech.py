"""Speech recognition service: `POST /transcribe` (multipart field `audio`) -> transcript.

Two BentoML services: `SpeechRecognizer` (the public API: decode, mix to mono, resample, cut
long recordings into windows) and `SpeechModel` (one worker holding the ONNX Runtime session;
its `logits` API batches windows across concurrent requests, zero-padded, each cut back to its
own frames, so a batched answer equals the answer alone; with TIFFIN_BATCHING=0 each API worker
holds a session itself, a hop between processes less per request). Windows are stitched and
CTC-decoded as in `tiffin predict`: both go through tiffin.host.SpeechPredictor.

Run: `tiffin serve ARTIFACT`, or `TIFFIN_ARTIFACT=DIR bentoml serve tiffin.serve.speech:SpeechRecognizer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from tiffin.serve.served_model import ServedModel, served_artifact
from tiffin.serve import bentoml_patches
from tiffin.serve import speech_live
from tiffin.serve.openapi import TruthfulOpenApi
from tiffin.serve.settings import model_service_options, read_settings
from tiffin.serve.uploads import (
    UploadError, UploadLimit, check_upload, error_response, media_error,
    model_call,
)
from tiffin.errors import MediaError
from tiffin.host import SpeechPredictor, WaveLogits, use_recorded_decoder
from tiffin.spec import SpeechSpec

TASK = "speech-recognition"
# what BentoML needs when it builds the classes; each instance reads the rest when it starts
SETTINGS = read_settings()
bentoml_patches.install()  # BentoML fixes, or a one-line error naming the BentoML version


@bentoml.service(name="tiffin-speech-model", **model_service_options(SETTINGS))
class SpeechModel:
    """The exported graph: mono waveforms in, CTC logits [frames, vocab] per waveform out."""

    def __init__(self) -> None:
        self.model = ServedModel(read_settings(), TASK)
        pre = self.model.meta["preprocessing"]
        self.wave_logits = WaveLogits(self.model, pre["conv_kernel"], pre["conv_stride"])

    @bentoml.api(batchable=SETTINGS.batching, max_batch_size=SETTINGS.max_batch, max_latency_ms=SETTINGS.max_latency_ms)
    def logits(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return self.wave_logits(waves)


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
            path, meta = self.model.model.path, self.model.model.meta  # read and hashed once, by its owner
        else:
            path, meta = served_artifact(self.settings, TASK, check_model_file=False)  # the model worker hashes it
        pre = meta["preprocessing"]
        # a long recording's windows go to the model TIFFIN_MAX_BATCH at a time (the model worker
        # batches them with other requests'): a model call's memory is bounded by the settings,
        # not by the upload (all windows of 30 min at once were one 170 MB request)
        spec = SpeechSpec.from_dict({**pre, "vocab": meta["vocab"]})
        self.host = SpeechPredictor(self._logits, spec, meta["backbone"],
                                    pre["conv_kernel"], pre["conv_stride"], windows_per_call=self.settings.max_batch)
        self.spec = self.host.spec
        use_recorded_decoder(self.host, path, meta)  # `tiffin export --words/--lm`: transcripts in words
        speech_live.register(self)  # /transcribe/stream's streams run on this worker's host and settings

    def _logits(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """The model worker's (or this worker's own) logits, a 503 when the model worker is lost."""
        with model_call():
            return self.model.logits(waves)

    @bentoml.api
    def transcribe(self, audio: Path, timestamps: bool = False) -> dict[str, Any]:
        """Transcript of a recording (any rate, channels or format soundfile or FFmpeg reads): greedy
        CTC, or beam search when the artifact carries a word list / LM, then with `timestamps`
        each word's start and end in seconds."""
        try:
            return self._transcribe(audio, timestamps)
        except UploadError as err:
            return error_response(err)

    def _transcribe(self, audio: Path, timestamps: bool = False) -> dict[str, Any]:
        check_upload(audio, "audio")
        try:
            # what `tiffin predict` runs per file: refused before decoding when the headers declare
            # more than TIFFIN_MAX_AUDIO_SECONDS, cut off at it when they understate; mixed down and
            # resampled as it decodes, so the worker holds the recording at the model's rate and one
            # block of the file
            got = self.host.predict_file(audio, timestamps=timestamps, limits=self.settings.limits)
        except MediaError as err:
            raise media_error(err, "audio") from None
        return {"text": got["text"], "duration_s": got["duration_s"], "backbone": self.host.backbone,
                **{key: got[key] for key in ("warnings", "words") if key in got}}


SpeechRecognizer.add_asgi_middleware(UploadLimit, max_bytes=SETTINGS.max_upload_bytes)
SpeechRecognizer.add_asgi_middleware(TruthfulOpenApi)  # /docs.json lists every status and body it answers
SpeechRecognizer.add_asgi_middleware(speech_live.LiveTranscription)  # WebSocket /transcribe/stream: Vosk's protocol
