"""The model a service serves: which artifact it runs and the session it holds over it.

The artifact is TIFFIN_ARTIFACT (a folder, for local runs) or a BentoML model (TIFFIN_MODEL,
else the bento's own, else tiffin-video|speech:latest), checked like every other read of an
artifact (tiffin.artifact_json: schema, sha256), and refused unless it is an ONNX artifact of
the task; `ServedModel` is the session a model worker holds over it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tiffin.serve.settings import Settings
from tiffin.artifact_json import read_artifact
from tiffin.errors import TiffinError
from tiffin.tasks import TASKS


def served_artifact(settings: Settings, task: str, check_model_file: bool = True) -> tuple[Path, dict[str, Any]]:
    """(artifact folder, tiffin.json) for a service of `task`; `check_model_file` False skips
    hashing the model file, for an API worker that reads only the spec (its model worker,
    which opens the file, checks it)."""
    if settings.artifact:
        path = Path(settings.artifact)
    else:
        import bentoml

        # a bento built by `tiffin build` carries its model's tag as the bento argument `model`
        tag = settings.model or getattr(bentoml.use_arguments(), "model", None) or f"{TASKS[task].bento_model}:latest"
        try:
            path = Path(bentoml.models.get(tag).path)
        except bentoml.exceptions.NotFound:
            raise TiffinError(f"BentoML model {tag} not found: set TIFFIN_ARTIFACT to an artifact folder, "
                              f"or store one with `tiffin build ARTIFACT`") from None
    meta = onnx_artifact(path, check_model_file)
    if meta["task"] != task:
        raise TiffinError(f"{path}: is a {meta['task']} artifact; this service serves {task}")
    return path, meta


def onnx_artifact(path: Path, check_model_file: bool = True) -> dict[str, Any]:
    """tiffin.json of an artifact serving can run (read_artifact's checks, and ONNX)."""
    meta = read_artifact(path, check_model_file)
    if meta["format"] != "onnx":
        raise TiffinError(f"{path}: is a {meta['format']} artifact; serving runs ONNX ones "
                          f"(`tiffin export MODEL --format onnx`)")
    return meta


class ServedModel:
    """What a model service holds: one session over the artifact (tiffin.host.open_session:
    ONNX Runtime, device and threads from the settings, any batch size even for a graph with a
    fixed one) and the artifact's tiffin.json, read and hashed once per worker."""

    def __init__(self, settings: Settings, task: str):
        from tiffin.host import open_session

        path, self.meta = served_artifact(settings, task)
        self.path = path
        threads = settings.threads or None
        if not settings.batching and not threads:
            # batching off, every API worker holds a session of its own: they share the cores
            threads = max(1, (os.cpu_count() or 1) // settings.workers)
        # no spinning: the API workers decode on the same cores (c=1 speech 24 -> 17 ms, BENCHMARKS.md)
        self.session = open_session(path, self.meta, settings.device, threads, spinning=False,
                                    runtime=settings.runtime)
        # memory returned after each request: the worker's size follows TIFFIN_MAX_BATCH, not the
        # largest request it ever ran (ONNX Runtime sessions; OpenVINO frees its own)
        from tiffin.runtimes import FixedBatch

        inner = self.session.session if isinstance(self.session, FixedBatch) else self.session
        if hasattr(inner, "return_memory_after_runs"):
            inner.return_memory_after_runs()

    def __call__(self, *inputs):
        return self.session(*inputs)
