"""Synthetic action videos: shapes that move, written with PyAV in several codecs.

A motion task that a model can only solve by looking at time (a single frame does not tell
"left" from "right"), with varied shapes, colours, sizes, textures, speeds, frame rates and
containers, so decoding is exercised the way users' folders exercise it.
Run: `tiffin synth video DIR --per-class 24`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

# (direction x, direction y) per class; the unit vector a shape travels along.
MOTIONS: dict[str, tuple[float, float]] = {
    "move_left": (-1.0, 0.0),
    "move_right": (1.0, 0.0),
    "move_up": (0.0, -1.0),
    "move_down": (0.0, 1.0),
}

# (suffix, encoder, options): the containers and codecs users' folders hold.
ENCODINGS: list[tuple[str, str, dict[str, str]]] = [
    (".mp4", "libx264", {"crf": "20", "preset": "veryfast"}),
    (".avi", "mpeg4", {"qscale": "3"}),
    (".webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"}),
    (".mkv", "libx264", {"crf": "20", "preset": "veryfast"}),
]


@dataclass(frozen=True)
class Clip:
    """One generated video: where it went and how it was made."""

    path: Path
    label: str
    fps: int
    frames: int


def render_motion(
    rng: np.random.Generator, direction: tuple[float, float], width: int, height: int, num_frames: int
) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 of one shape crossing a textured background."""
    background = rng.integers(0, 256, size=3)
    noise = rng.normal(0, rng.uniform(5, 30), size=(height // 8 + 1, width // 8 + 1, 3))
    texture = np.kron(noise, np.ones((8, 8, 1)))[:height, :width]
    base = np.clip(background + texture, 0, 255)
    colour = (background + rng.integers(80, 176, size=3)) % 256
    radius = rng.uniform(0.1, 0.2) * min(width, height)
    square = rng.random() < 0.5
    dx, dy = direction
    # Travel most of the frame along the direction; start on the opposite side.
    span_x, span_y = (width - 2 * radius) * rng.uniform(0.7, 1.0), (height - 2 * radius) * rng.uniform(0.7, 1.0)
    cx0 = width / 2 - dx * span_x / 2 + (0 if dx else rng.uniform(-0.25, 0.25) * width)
    cy0 = height / 2 - dy * span_y / 2 + (0 if dy else rng.uniform(-0.25, 0.25) * height)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        progress = t / max(1, num_frames - 1)
        cx, cy = cx0 + dx * span_x * progress, cy0 + dy * span_y * progress
        if square:
            mask = (np.abs(xs - cx) <= radius) & (np.abs(ys - cy) <= radius)
        else:
            mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        frame = base.copy()
        frame[mask] = colour
        frames[t] = frame
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int, encoder: str, options: dict[str, str]) -> None:
    """Encode RGB frames [T, H, W, 3] to `path` with PyAV."""
    _, height, width, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(encoder, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_motion_dataset(
    out: str | Path,
    per_class: int = 16,
    seed: int = 0,
    classes: list[str] | None = None,
    size: tuple[int, int] = (112, 84),
    duration: tuple[float, float] = (1.2, 2.0),
) -> list[Clip]:
    """Write a Kinetics-layout folder OUT/<class>/<video> of moving shapes.

    Args:
        out: destination folder (created).
        per_class: videos per class.
        seed: makes the whole dataset reproducible.
        classes: a subset of `MOTIONS` (all by default).
        size: nominal (width, height); each video varies it by up to 25%.
        duration: range of video lengths in seconds.

    Returns:
        The clips written, in order.
    """
    rng = np.random.default_rng(seed)
    names = classes or list(MOTIONS)
    unknown = sorted(set(names) - set(MOTIONS))
    if unknown:
        raise ValueError(f"unknown motion classes {unknown}; choose from {sorted(MOTIONS)}")
    clips = []
    for label in names:
        folder = Path(out) / label
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            suffix, encoder, options = ENCODINGS[(k + names.index(label)) % len(ENCODINGS)]
            fps = int(rng.choice([12, 15, 24, 25, 30]))
            width = 2 * round(size[0] * rng.uniform(0.75, 1.25) / 2)
            height = 2 * round(size[1] * rng.uniform(0.75, 1.25) / 2)
            num_frames = max(4, round(rng.uniform(*duration) * fps))
            frames = render_motion(rng, MOTIONS[label], width, height, num_frames)
            path = folder / f"{label}_{k:03d}{suffix}"
            write_video(path, frames, fps, encoder, options)
            clips.append(Clip(path, label, fps, num_frames))
    return clips


# A small closed vocabulary: hundreds of utterances of it are enough for a tiny CTC model to learn.
SPEECH_WORDS = ("the red blue green big small cat dog bird fish runs jumps sits sleeps eats "
                "fast slow here there now today one two three four five yes no good bad home").split()


def make_speech_dataset(out: str | Path, count: int = 200, seed: int = 0, voices: list[str] | None = None,
                        words: tuple[str, ...] = tuple(SPEECH_WORDS)) -> list[tuple[str, str]]:
    """Speak random 3-6 word sentences with espeak-ng into OUT/NNNN.wav and OUT/train.csv.

    Voices, speed and pitch vary per utterance; espeak-ng writes 22.05 kHz wav, so training
    resamples. Rows are (file name, sentence), as in `speech_files,targets` columns.

    Raises:
        TiffinError: espeak-ng is not installed.
    """
    import csv
    import shutil
    import subprocess

    from tiffin.errors import TiffinError

    if shutil.which("espeak-ng") is None:
        raise TiffinError("espeak-ng is not installed; install it (Debian/Ubuntu: apt-get install espeak-ng)")
    rng = np.random.default_rng(seed)
    voices = voices or ["en-us", "en-gb"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        sentence = " ".join(rng.choice(words, size=int(rng.integers(3, 7))))
        name = f"utt{i:04d}.wav"
        voice = voices[i % len(voices)]
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(rng.integers(130, 190))),
                        "-p", str(int(rng.integers(30, 70))), "-w", str(out / name), sentence],
                       check=True, capture_output=True)
        rows.append((name, sentence))
    with open(out / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["speech_files", "targets"])
        writer.writerows(rows)
    return rows
