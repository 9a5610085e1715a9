"""Which artifact a service runs: TIFFIN_ARTIFACT (a folder, for local runs) or a BentoML model
(TIFFIN_MODEL, else the bento's own, else tiffin-video|speech:latest), checked like every other
read of an artifact (schema, sha256), and refused unless it is an ONNX artifact of the task."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from serve.settings import Settings
from tiffin.artifact import read_artifact
from tiffin.errors import TiffinError

# task -> BentoML model name `tiffin build` stores the artifact under (by default)
MODEL_NAMES = {"video-classification": "tiffin-video", "speech-recognition": "tiffin-speech"}


def served_artifact(settings: Settings, task: str) -> tuple[Path, dict[str, Any]]:
    """(artifact folder, tiffin.json) for a service of `task`."""
    if settings.artifact:
        path = Path(settings.artifact)
    else:
        import bentoml

        # a bento built by `tiffin build` carries its model's tag as the bento argument `model`
        tag = settings.model or getattr(bentoml.use_arguments(), "model", None) or f"{MODEL_NAMES[task]}:latest"
        try:
            path = Path(bentoml.models.get(tag).path)
        except bentoml.exceptions.NotFound:
            raise TiffinError(f"BentoML model {tag} not found: set TIFFIN_ARTIFACT to an artifact folder, "
                              f"or store one with `tiffin build ARTIFACT`") from None
    meta = onnx_artifact(path)
    if meta["task"] != task:
        raise TiffinError(f"{path}: is a {meta['task']} artifact; this service serves {task}")
    return path, meta


def onnx_artifact(path: Path) -> dict[str, Any]:
    """tiffin.json of an artifact serving can run (read_artifact's checks, and ONNX)."""
    meta = read_artifact(path)
    if meta["format"] != "onnx":
        raise TiffinError(f"{path}: is a {meta['format']} artifact; serving runs ONNX ones "
                          f"(`tiffin export MODEL --format onnx`)")
    return meta


class ServedModel:
    """What a model service holds: one ONNX Runtime session (device and threads from the
    settings), the artifact's tiffin.json and the batch size baked into its graph, if any."""

    def __init__(self, settings: Settings, task: str):
        from tiffin.artifact import fixed_batch
        from tiffin.onnx_session import OnnxSession

        path, self.meta = served_artifact(settings, task)
        threads = settings.threads or None
        if not settings.batching and not threads:
            # batching off, every API worker holds a session of its own: they share the cores
            threads = max(1, (os.cpu_count() or 1) // settings.workers)
        # no spinning: the API workers decode on the same cores (c=1 speech 24 -> 17 ms, BENCHMARKS.md)
        self.session = OnnxSession(path / self.meta["model_file"], settings.device, threads, spinning=False)
        self.batch_size = fixed_batch(self.meta)

    def __call__(self, *inputs):
        """The graph's output for inputs of any batch size (see run_fixed_batches)."""
        return run_fixed_batches(self.session, self.batch_size, *inputs)


def run_fixed_batches(session, batch_size: int | None, *inputs):
    """Call `session` on inputs whose batch may differ from the graph's fixed batch size: split
    into pieces of that size, the last one padded with copies of its first item, outputs cut back."""
    import numpy as np

    n = len(inputs[0])
    if batch_size is None or n == batch_size:
        return session(*inputs)
    outputs = []
    for start in range(0, n, batch_size):
        piece = [x[start : start + batch_size] for x in inputs]
        short = batch_size - len(piece[0])
        if short:
            piece = [np.concatenate([p, np.repeat(p[:1], short, axis=0)]) for p in piece]
        outputs.append(session(*piece)[: batch_size - short])
    return np.concatenate(outputs)
