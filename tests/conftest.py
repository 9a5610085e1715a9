"""Shared fixtures: media generated into temporary folders, never checked in."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.speech_media import write_corpus
from tiffin.train.synthetic import make_motion_dataset


@pytest.fixture(scope="session", autouse=True)
def config_dir(tmp_path_factory) -> Path:
    """A config folder of the test session's own (its signing key, its trusted keys), never ~/.config."""
    import os

    folder = tmp_path_factory.mktemp("config")
    os.environ["TIFFIN_CONFIG_DIR"] = str(folder)
    return folder


def tiffin(*args):
    """Run the `tiffin` CLI in-process (typer's runner); the result has exit_code and output."""
    from typer.testing import CliRunner

    from tiffin.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def motion_dataset(tmp_path_factory) -> Path:
    """A small 4-class Kinetics-layout folder in mp4/avi/webm/mkv (6 videos a class)."""
    root = tmp_path_factory.mktemp("motion")
    make_motion_dataset(root, per_class=6, seed=1, size=(80, 60))
    return root


@pytest.fixture(scope="session")
def checkpoints(motion_dataset, tmp_path_factory) -> dict[str, Path]:
    """Two-step training runs of both tasks (tiny x3d_xs, tiny wav2vec2) and the speech clips they used."""
    root = tmp_path_factory.mktemp("checkpoints")
    video = tiffin("train", "video", "--train-folder", motion_dataset, "--backbone", "x3d_xs", "--no-pretrained",
                   "--num-frames", "4", "--crop-size", "32", "--clip-duration", "0.8", "--max-steps", "2",
                   "--num-workers", "0", "--no-progress", "--out", root / "video")
    assert video.exit_code == 0, video.output
    rows = write_corpus(root / "clips", 8)
    (root / "train.csv").write_text("speech_files,targets\n" + "\n".join(f"clips/{n},{t}" for n, t in rows))
    speech = tiffin("train", "speech", "--train-csv", root / "train.csv", "--backbone", "tiffin/wav2vec2-tiny",
                    "--max-steps", "2", "--num-workers", "0", "--no-progress", "--out", root / "speech")
    assert speech.exit_code == 0, speech.output
    return {"video": root / "video" / "checkpoints" / "best.ckpt", "speech": root / "speech" / "checkpoints" / "best.ckpt",
            "clips": root / "clips"}


@pytest.fixture(scope="session")
def artifacts(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """fp32 ONNX artifacts of both checkpoints (what the services serve)."""
    root = tmp_path_factory.mktemp("artifacts")
    for task in ("video", "speech"):
        result = tiffin("export", checkpoints[task], "--format", "onnx", "--out", root / task)
        assert result.exit_code == 0, result.output
    return {"video": root / "video", "speech": root / "speech"}


@pytest.fixture(scope="session")
def videos(motion_dataset) -> list[Path]:
    """Eight videos of the motion dataset, in every container it has."""
    return sorted(p for p in motion_dataset.rglob("*") if p.is_file())[::3]


@pytest.fixture(scope="session")
def recordings(checkpoints) -> list[Path]:
    """The speech checkpoint's training clips."""
    return sorted(checkpoints["clips"].iterdir())


@pytest.fixture(scope="session")
def media_corpus(motion_dataset, checkpoints, tmp_path_factory) -> list:
    """(case, file) for every case of tests/media_corpus.py, written from good test media."""
    from tests.media_corpus import write_corpus

    video = next(p for p in sorted(motion_dataset.rglob("*.mp4")))
    return write_corpus(tmp_path_factory.mktemp("corpus"), video, sorted(checkpoints["clips"].iterdir())[0])


@pytest.fixture(scope="session")
def corpus_predictions(artifacts, media_corpus) -> dict[Path, dict]:
    """`tiffin predict ARTIFACT FILES --json` over the corpus, per file (its exit status under None)."""
    import json

    answers: dict = {None: {}}
    for task, field in (("video", "video"), ("speech", "audio")):
        files = [path for case, path in media_corpus if case.field == field]
        result = tiffin("predict", artifacts[task], *files, "--json", "--top-k", "2")
        answers[None][task] = (result.exit_code, result.output)
        answers.update({Path(entry["file"]): entry for entry in json.loads(result.stdout)})
    return answers


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
    return int(round(float(frame.mean()) / 8))
