"""Helpers the test modules share (fixtures stay in conftest.py): the CLI run in-process, media
written for a test, a running `tiffin serve` and requests to it, and CTC logits built by hand.

Test modules import these from here, never from one another.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tiffin.cpu import has_bf16
from tiffin.ctc import Vocabulary

ROOT = Path(__file__).resolve().parent.parent


# --- this machine, as tiffin reads it ----------------------------------------------------------------

# whether this CPU computes bf16 in hardware, read before any test tells tiffin otherwise
HAS_BF16 = bool(has_bf16())


def tell_cpu_bf16(monkeypatch, present: bool) -> None:
    """Make tiffin.cpu read this machine's flags with bf16 instructions (AVX-512 bf16, AMX bf16)
    added or taken away, on x86 Linux, so that both sides of a choice made on them run on any
    machine. Only what tiffin decides follows; the hardware computes as it can."""
    from tiffin import cpu

    real = cpu.cpu_flags() or frozenset({"avx2", "fma"})
    flags = frozenset((real - cpu.BF16_FLAGS) | (cpu.BF16_FLAGS if present else frozenset()))
    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    assert cpu.has_bf16() is present and (cpu.precision_warning("bf16") is None) is present


# --- the CLI ---------------------------------------------------------------------------------------

def tiffin(*args):
    """Run the `tiffin` CLI in-process (typer's runner); the result has exit_code and output."""
    from typer.testing import CliRunner

    from tiffin.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def predict_json(artifact: Path, files: list[Path], *args) -> list[dict]:
    """`tiffin predict ARTIFACT FILES --json ARGS`, which must succeed; its answers."""
    result = tiffin("predict", artifact, *files, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- media -----------------------------------------------------------------------------------------

def write_frames(path: Path, frames: np.ndarray, fps: int = 10, codec: str = "libx264", pix_fmt: str = "yuv420p",
                 gop: int | None = None, pts_ms: list[int] | None = None) -> Path:
    """Encode RGB frames with PyAV; `pts_ms` gives explicit (variable) frame times."""
    _, height, width, _ = frames.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def numbered_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames whose grey level encodes their index (index * 8), robust to lossy coding."""
    return np.stack([np.full((height, width, 3), i * 8, dtype=np.uint8) for i in range(n)])


def frame_index(frame: np.ndarray) -> int:
    """The index a frame of `numbered_frames` encodes."""
    return int(round(float(frame.mean()) / 8))


def slow_video(path: Path) -> Path:
    """A video whose classification takes a second or more with TIFFIN_CLIPS=48: many clips, each
    decoded from a 320x240 stream with few key frames."""
    frames = np.zeros((150, 240, 320, 3), np.uint8)
    for i, frame in enumerate(frames):
        frame[:, (i * 4) % 280:(i * 4) % 280 + 40] = 255
    return write_frames(path, frames, fps=10, gop=150)


# --- services --------------------------------------------------------------------------------------

def wait_until(condition, seconds: float) -> bool:
    """Whether `condition()` came true within `seconds` (polled)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def service(monkeypatch, name: str, artifact: Path, **env):
    """A service instance as BentoML creates it in a worker, configured through the environment."""
    monkeypatch.setenv("TIFFIN_ARTIFACT", str(artifact))
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    from tiffin.serve import speech, video

    service_class = {"video": video.VideoClassifier, "speech": speech.SpeechRecognizer}[name]
    dependency = vars(getattr(service_class, "inner", service_class)).get("model")
    if dependency is not None:  # batching: BentoML resolves the model service once per process (a server
        monkeypatch.setattr(dependency, "_resolved", None)  # holds one artifact); here each test has its own,
    instance = service_class()
    if dependency is not None:
        instance.model  # noqa: B018 - so it is resolved now, for this artifact, not at the first request
    return instance


SERVER_PIDS: dict[str, int] = {}  # url -> pid of the running `tiffin serve` (then `bentoml serve`)


@contextmanager
def running_server(artifact: Path, tmp_path: Path, **env):
    """`tiffin serve ARTIFACT` in a process group of its own, ready, then stopped; yields its URL."""
    from benchmarks.load import started_server

    settings = {"BENTOML_HOME": str(tmp_path / "bentoml"), **{k: str(v) for k, v in env.items()}}
    log = tmp_path / f"server-{len(SERVER_PIDS)}.log"
    with started_server(["tiffin", "serve", str(artifact)], log, settings) as (url, pid):
        SERVER_PIDS[url] = pid
        yield url


def post_multipart(url: str, field: str, data: bytes, filename: str = "upload.bin",
                   fields: dict[str, str] | None = None) -> tuple[int, dict]:
    """A multipart POST written by hand with urllib, as a client that is not BentoML's would."""
    from benchmarks.load import multipart_body

    boundary = uuid.uuid4().hex
    body = multipart_body(boundary, [(k, None, v.encode()) for k, v in (fields or {}).items()] + [(field, filename, data)])
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return send_request(request)


def send_request(request: urllib.request.Request) -> tuple[int, dict]:
    """(status, JSON body) of a request, an HTTP error status included."""
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def concurrently(url: str, field: str, files: list[Path], fields: dict[str, str] | None = None) -> list[tuple]:
    """POST every file at once, one thread each; the (status, body) answers in file order."""
    answers: list[tuple] = [()] * len(files)

    def send(i: int) -> None:
        answers[i] = post_multipart(url, field, files[i].read_bytes(), files[i].name, fields)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


# --- CTC logits by hand ----------------------------------------------------------------------------

VOCAB = Vocabulary()  # wav2vec2-base-960h's: upper case, "|" between words, "<pad>" the blank


def frames(path: list[str | dict[str, float]], peak: float = 6.0) -> np.ndarray:
    """Logits [frames, vocab]: each step one token at `peak` (or several, {token: logit}), a blank
    frame after each so repeated letters stay apart."""
    rows = []
    for step in path:
        for choice in (step if isinstance(step, dict) else {step: peak}, {"<pad>": peak}):
            row = np.zeros(len(VOCAB), dtype=np.float32)
            for token, value in choice.items():
                row[VOCAB.index[token]] = value
            rows.append(row)
    return np.stack(rows)


def spell(*words: str, ambiguous: dict[int, dict[str, float]] | None = None) -> list:
    """The frame path of `words` (letters, "|" between), with steps replaced by `ambiguous`."""
    path = [c for w in words for c in list(w) + ["|"]][:-1]
    for k, choice in (ambiguous or {}).items():
        path[k] = choice
    return path


def killed_and_resumed(command: list[str], resumed: list[str], run: Path) -> None:
    """Start a training `command` writing run folder `run`, SIGKILL it inside epoch 1 (after epoch
    0's checkpoint), then run `resumed` to continue it; asserts each step."""
    import signal
    import subprocess

    import torch

    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    while not last.exists():  # written (renamed into place) when epoch 0 ends
        assert process.poll() is None
        time.sleep(0.02)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # the kill landed inside epoch 1
    finished = subprocess.run(resumed, cwd=ROOT, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
