"""Video classification service: `POST /classify` (multipart field `video`) -> top-k labels.

Two BentoML services: `VideoClassifier` (the public API, decoding in its workers) and
`VideoModel` (one worker holding the ONNX Runtime session, its `logits` API adaptively batched
across concurrent requests). With TIFFIN_BATCHING=0 there is no `VideoModel` worker: each API
worker holds a session itself, a hop between processes less per request. Decoding, clip choice
and score averaging are the host path's (tiffin.host.VideoPredictor), so an answer equals
`tiffin predict ARTIFACT FILE` on the same file.

Run: `tiffin serve ARTIFACT`, or `TIFFIN_ARTIFACT=DIR bentoml serve tiffin.serve.video:VideoClassifier`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from pydantic import BeforeValidator, Field

from tiffin.serve.served_model import ServedModel, served_artifact
from tiffin.serve import bentoml_patches
from tiffin.serve.openapi import TruthfulOpenApi
from tiffin.serve.settings import model_service_options, read_settings
from tiffin.serve.uploads import (
    UploadError, UploadLimit, check_upload, error_response, media_error,
    model_call,
)
from tiffin.errors import MediaError
from tiffin.host import VideoPredictor
from tiffin.spec import VideoSpec

TASK = "video-classification"
# what BentoML needs when it builds the classes; each instance reads the rest when it starts
SETTINGS = read_settings()
bentoml_patches.install()  # BentoML fixes, or a one-line error naming the BentoML version


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax ints take JSON `true` as 1: a client sending a flag where a count belongs gets 400
    if isinstance(value, bool):
        raise ValueError("top_k is a whole number, not true/false")
    return value


TopK = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=1000)]


@bentoml.service(name="tiffin-video-model", **model_service_options(SETTINGS))
class VideoModel:
    """The exported graph: uint8 clips [N, T, S, S, 3] in, logits [N, classes] out."""

    def __init__(self) -> None:
        self.model = ServedModel(read_settings(), TASK)

    @bentoml.api(batchable=SETTINGS.batching, max_batch_size=SETTINGS.max_batch, max_latency_ms=SETTINGS.max_latency_ms)
    def logits(self, frames: np.ndarray) -> np.ndarray:
        return self.model(frames)


@bentoml.service(name="tiffin-video", workers=SETTINGS.workers, traffic={"timeout": SETTINGS.timeout_s})
class VideoClassifier:
    """Classifies an uploaded video with the artifact's labels."""

    # batching on: one model worker batches every API worker's calls; off: each API worker
    # holds the session itself, which spares a request the hop between processes
    if SETTINGS.batching:
        model = bentoml.depends(VideoModel)

    def __init__(self) -> None:
        self.settings = read_settings()
        if not SETTINGS.batching:
            self.model = VideoModel()
            meta = self.model.model.meta  # read and hashed once, by the session's owner
        else:
            _, meta = served_artifact(self.settings, TASK, check_model_file=False)  # the model worker hashes it
        spec = VideoSpec.from_dict({**meta["preprocessing"], "labels": meta["labels"]})
        self.host = VideoPredictor(self._logits, spec, meta["backbone"])

    def _logits(self, clips: np.ndarray) -> np.ndarray:
        """The model worker's (or this worker's own) logits, a 503 when the model worker is lost."""
        with model_call():
            return self.model.logits(clips)

    @bentoml.api
    def classify(self, video: Path, top_k: TopK = 5) -> dict[str, Any]:
        """Top-k labels of a video (scores averaged over TIFFIN_CLIPS clips spread over it)."""
        try:
            return self._classify(video, top_k)
        except UploadError as err:
            return error_response(err)

    def _classify(self, video: Path, top_k: int) -> dict[str, Any]:
        check_upload(video, "video")
        try:
            # what `tiffin predict` runs per file, within the upload's decoding budget (the TIFFIN_MAX_* settings)
            got = self.host.predict_file(video, top_k, self.settings.clips, limits=self.settings.limits)
        except MediaError as err:
            raise media_error(err, "video") from None
        return {"labels": got["labels"], "clips": got["clips"], "duration_s": got["duration_s"],
                "backbone": self.host.backbone, **({"warnings": got["warnings"]} if "warnings" in got else {})}


VideoClassifier.add_asgi_middleware(UploadLimit, max_bytes=SETTINGS.max_upload_bytes)
VideoClassifier.add_asgi_middleware(TruthfulOpenApi)  # /docs.json lists every status and body it answers
