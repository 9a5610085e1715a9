"""Serving settings, read from the environment once at import (BentoML builds its service
classes at import time, so batching and workers must be known then).

Every variable has a safe default; a bad value stops the server at start with a one-line error
naming the variable. `tiffin serve` sets TIFFIN_ARTIFACT and TIFFIN_WORKERS; a bento built by
`tiffin build` finds its own model without any.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tiffin.errors import TiffinError
from tiffin.limits import LIMITS, Limits, env_number, read_limits
from tiffin.runtimes import names, runtime_for, serving_runtimes

# name -> (default, meaning); README's serving table is this table
VARIABLES: dict[str, tuple[str, str]] = {
    "TIFFIN_ARTIFACT": ("", "artifact folder to serve (local runs); else the BentoML model TIFFIN_MODEL"),
    "TIFFIN_MODEL": ("", "BentoML model tag [default: the bento's own model, else tiffin-video:latest or tiffin-speech:latest]"),
    "TIFFIN_DEVICE": ("auto", "ONNX Runtime provider: auto (CUDA when onnxruntime-gpu sees a GPU), cpu or cuda"),
    "TIFFIN_RUNTIME": ("", f"runtime of the model: {names(serving_runtimes())} [default: the artifact's recorded one, else "
                           f"{runtime_for('onnx').name}]"),
    "TIFFIN_GPUS": ("0", "GPUs the model service declares to BentoML (its resources: BentoML gives it those devices); `tiffin build --gpu` bentos set 1"),
    "TIFFIN_THREADS": ("0", "ONNX Runtime intra-op threads per session; 0 = all cores (batching off: shared by the API workers)"),
    "TIFFIN_WORKERS": ("1", "API workers (decoding); the model runs in one worker of its own (batching off: in each API worker)"),
    "TIFFIN_BATCHING": ("1", "1: adaptive batching of model calls across requests, in a model worker; 0: off, no model worker"),
    "TIFFIN_MAX_BATCH": ("16", "largest batch (>= 2) the model is called with (clips or audio windows)"),
    "TIFFIN_MAX_LATENCY_MS": ("60000", "longest a batched model call may wait and run before it fails (BentoML's max_latency_ms)"),
    "TIFFIN_MAX_UPLOAD_MB": ("100", "largest upload accepted, checked while the body streams in (413 above)"),
    "TIFFIN_CLIPS": ("1", "video: clips spread over each video, scores averaged (as `tiffin predict --clips`)"),
    "TIFFIN_TIMEOUT_S": ("300", "request timeout"),
    "TIFFIN_HEADER_TIMEOUT_S": ("10", "seconds a connection has to send a request's head (request line and headers; the body is not timed) after it opens or its last response ends, else it is closed (slowloris)"),
    "TIFFIN_STREAM_PARTIAL_S": ("0.5", "live transcription: seconds of new audio, and of time, before a partial result is computed again (each costs a model call on the window being filled), and no sooner than twice the time the last one took; between, the last one is repeated"),
    "TIFFIN_STREAM_IDLE_S": ("20", "live transcription: a stream that sends no message for this many seconds is closed (1008)"),
    "TIFFIN_MAX_STREAMS": ("16", "live transcription: streams one API worker serves at once; more are closed with 1013 (try again later); 0 turns the endpoint off"),
    "TIFFIN_SILENCE_DBFS": ("-60", "speech: a window of audio whose every 20 ms is quieter than this (dBFS) is not sent to the model (its frames are blank); `off` sends every window (as `tiffin predict --keep-silence`)"),
    # what one upload may cost to decode (422 above): tiffin.limits' table, shared with the CLI
    **{limit.env: (limit.default, limit.meaning) for limit in LIMITS.values()},
}


@dataclass(frozen=True)
class Settings:
    artifact: str
    model: str
    device: str
    runtime: str | None
    gpus: int
    threads: int
    workers: int
    batching: bool
    max_batch: int
    max_latency_ms: int
    max_upload_bytes: int
    limits: Limits
    clips: int
    timeout_s: int
    header_timeout_s: int
    stream_partial_s: float
    stream_idle_s: float
    max_streams: int


def model_service_options(settings: Settings) -> dict:
    """Options of a task's model service (`bentoml.service`): one worker, the request timeout, and
    the GPUs it declares (recorded in a bento's bento.yaml, where deployments read them)."""
    return {"workers": 1, "traffic": {"timeout": settings.timeout_s},
            **({"resources": {"gpu": settings.gpus}} if settings.gpus else {})}


def _number(name: str, kind: type, minimum: float, env: dict[str, str]) -> int | float:
    return env_number(name, kind, minimum, VARIABLES[name][0], env)


def read_settings(env: dict[str, str] | None = None) -> Settings:
    """Settings from `env` (default os.environ)."""
    env = dict(os.environ if env is None else env)
    device = env.get("TIFFIN_DEVICE", "auto")
    if device not in ("auto", "cpu", "cuda"):
        raise TiffinError(f"TIFFIN_DEVICE={device!r}: choose auto, cpu or cuda")
    batching = env.get("TIFFIN_BATCHING", "1")
    if batching not in ("0", "1"):
        raise TiffinError(f"TIFFIN_BATCHING={batching!r}: give 1 (on) or 0 (off)")
    runtime = env.get("TIFFIN_RUNTIME", "") or None
    if runtime is not None and runtime not in [r.name for r in serving_runtimes()]:
        raise TiffinError(f"TIFFIN_RUNTIME={runtime!r}: the services run on {names(serving_runtimes(), ', ')}")
    from tiffin.speech_stream import silence_threshold

    silence_threshold(env)  # a bad TIFFIN_SILENCE_DBFS stops the server at start, not at its first request
    return Settings(
        artifact=env.get("TIFFIN_ARTIFACT", ""), model=env.get("TIFFIN_MODEL", ""), device=device, runtime=runtime,
        gpus=int(_number("TIFFIN_GPUS", int, 0, env)), threads=int(_number("TIFFIN_THREADS", int, 0, env)), workers=int(_number("TIFFIN_WORKERS", int, 1, env)),
        batching=batching == "1", max_batch=int(_number("TIFFIN_MAX_BATCH", int, 2, env)),
        max_latency_ms=int(_number("TIFFIN_MAX_LATENCY_MS", int, 1, env)),
        max_upload_bytes=int(_number("TIFFIN_MAX_UPLOAD_MB", float, 0.001, env) * 1024 * 1024),
        limits=read_limits(env),
        clips=int(_number("TIFFIN_CLIPS", int, 1, env)), timeout_s=int(_number("TIFFIN_TIMEOUT_S", int, 1, env)),
        header_timeout_s=int(_number("TIFFIN_HEADER_TIMEOUT_S", int, 1, env)),
        stream_partial_s=float(_number("TIFFIN_STREAM_PARTIAL_S", float, 0, env)),
        stream_idle_s=float(_number("TIFFIN_STREAM_IDLE_S", float, 0.1, env)),
        max_streams=int(_number("TIFFIN_MAX_STREAMS", int, 0, env)),
    )
