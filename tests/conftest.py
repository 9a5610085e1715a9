"""Shared fixtures: media generated into temporary folders, never checked in."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from train.synthetic import make_motion_dataset


@pytest.fixture(scope="session")
def motion_dataset(tmp_path_factory) -> Path:
    """A small 4-class Kinetics-layout folder in mp4/avi/webm/mkv (6 videos a class)."""
    root = tmp_path_factory.mktemp("motion")
    make_motion_dataset(root, per_class=6, seed=1, size=(80, 60))
    return root


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
