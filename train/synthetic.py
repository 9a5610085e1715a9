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

# (direction x, direction y) per class; the vector a shape travels along (as a fraction of the frame).
MOTIONS: dict[str, tuple[float, float]] = {
    "move_left": (-1.0, 0.0),
    "move_right": (1.0, 0.0),
    "move_up": (0.0, -1.0),
    "move_down": (0.0, 1.0),
    # diagonals: the new task the demo fine-tunes the embedded video model on (not pretrained on)
    "move_up_left": (-1.0, -1.0),
    "move_up_right": (1.0, -1.0),
    "move_down_left": (-1.0, 1.0),
    "move_down_right": (1.0, 1.0),
}
# Actions that are not a straight path: a bar that turns, a shape that grows or shrinks, blinks
# or bounces. (turn direction, scale from -> to, blinks, bounces) per class.
ACTIONS: dict[str, tuple[int, tuple[float, float], int, int]] = {
    "rotate_clockwise": (1, (1.0, 1.0), 0, 0),
    "rotate_anticlockwise": (-1, (1.0, 1.0), 0, 0),
    "grow": (0, (0.4, 1.4), 0, 0),
    "shrink": (0, (1.4, 0.4), 0, 0),
    "blink": (0, (1.0, 1.0), 3, 0),
    "bounce": (0, (1.0, 1.0), 0, 2),
}
DEFAULT_CLASSES = ("move_left", "move_right", "move_up", "move_down")
# the classes of the embedded video model's pretraining corpus
PRETRAIN_CLASSES = DEFAULT_CLASSES + tuple(ACTIONS)
DIAGONALS = ("move_up_left", "move_up_right", "move_down_left", "move_down_right")

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


def render_action(
    rng: np.random.Generator, action: tuple[int, tuple[float, float], int, int], width: int, height: int,
    num_frames: int,
) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 of a bar or box that turns, changes size, blinks or bounces in place."""
    turn, (scale0, scale1), blinks, bounces = action
    background = rng.integers(0, 256, size=3)
    noise = rng.normal(0, rng.uniform(5, 30), size=(height // 8 + 1, width // 8 + 1, 3))
    base = np.clip(background + np.kron(noise, np.ones((8, 8, 1)))[:height, :width], 0, 255)
    colour = (background + rng.integers(80, 176, size=3)) % 256
    size = min(width, height)
    half_long, half_short = rng.uniform(0.22, 0.3) * size, rng.uniform(0.06, 0.12) * size
    if not turn:  # a box, not a bar, when it does not turn
        half_short = half_long * rng.uniform(0.6, 1.0)
    cx = width / 2 + rng.uniform(-0.15, 0.15) * width
    cy0 = height / 2 + rng.uniform(-0.1, 0.1) * height
    angle0, turns = rng.uniform(0, np.pi), rng.uniform(0.35, 0.5)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        p = t / max(1, num_frames - 1)
        scale = scale0 + (scale1 - scale0) * p
        cy = cy0 - (abs(np.sin(np.pi * bounces * p)) * 0.3 * height if bounces else 0.0)
        angle = angle0 + turn * 2 * np.pi * turns * p
        u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
        v = -(xs - cx) * np.sin(angle) + (ys - cy) * np.cos(angle)
        mask = (np.abs(u) <= half_long * scale) & (np.abs(v) <= half_short * scale)
        frame = base.copy()
        if not blinks or int(p * blinks * 2 - 1e-9) % 2 == 0:
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
        classes: names from `MOTIONS` and `ACTIONS` (default: the four straight moves).
        size: nominal (width, height); each video varies it by up to 25%.
        duration: range of video lengths in seconds.

    Returns:
        The clips written, in order.
    """
    rng = np.random.default_rng(seed)
    names = list(classes or DEFAULT_CLASSES)
    unknown = sorted(set(names) - set(MOTIONS) - set(ACTIONS))
    if unknown:
        raise ValueError(f"unknown motion classes {unknown}; choose from {', '.join([*MOTIONS, *ACTIONS])}")
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
            if label in MOTIONS:
                frames = render_motion(rng, MOTIONS[label], width, height, num_frames)
            else:
                frames = render_action(rng, ACTIONS[label], width, height, num_frames)
            path = folder / f"{label}_{k:03d}{suffix}"
            write_video(path, frames, fps, encoder, options)
            clips.append(Clip(path, label, fps, num_frames))
    return clips


# A small closed vocabulary: hundreds of utterances of it are enough for a tiny CTC model to learn.
SPEECH_WORDS = ("the red blue green big small cat dog bird fish runs jumps sits sleeps eats "
                "fast slow here there now today one two three four five yes no good bad home").split()


# espeak-ng voices the pretraining corpus speaks in (with variants below); en-gb-scotland is held
# out so that adapting to it is a real fine-tuning task.
PRETRAIN_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VOICE_VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5",
                  "+klatt", "+klatt2", "+klatt3")
HELD_OUT_VOICE = "en-gb-scotland"
FESTIVAL = "festival"  # in `voices`: Festival's default voice through text2wave


def text_sentences(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file that can be spoken as the transcript says them: each line's
    words (letters, inner apostrophes) in lower case, joined by spaces. Lines with digits are
    left out (espeak-ng says "1990" as words the transcript would not hold), so are empty ones.

    Raises:
        TiffinError: missing, not UTF-8, or no usable line.
    """
    import re

    from tiffin.errors import TiffinError
    from tiffin.ngram import WORD
    from tiffin.text_file import read_lines

    lines = read_lines(path, "--text", "one sentence a line")
    usable = [" ".join(WORD.findall(line.lower())) for line in lines if not re.search(r"\d", line)]
    usable = [line for line in usable if line]
    if not usable:
        raise TiffinError(f"--text {path}: no line of words without digits to speak")
    return usable


def make_speech_dataset(out: str | Path, count: int = 200, seed: int = 0, voices: list[str] | None = None,
                        words: tuple[str, ...] = tuple(SPEECH_WORDS), lengths: tuple[int, int] = (3, 6),
                        augment: bool = False, sentences: list[str] | None = None) -> list[tuple[str, str]]:
    """Speak random sentences of `words` into OUT/uttNNNN.wav and OUT/train.csv; with
    `sentences` (text_sentences of a user's text), `count` of those, drawn without replacement.

    Voices (espeak-ng names with optional +variant, or "festival"), speed and pitch vary per
    utterance; espeak-ng writes 22.05 kHz wav, Festival 16 kHz, so training resamples. With
    `augment`, each recording also gets a random gain, background noise at 10-40 dB SNR and, one
    time in four, telephone band-limiting (8 kHz and back). Rows are (file name, sentence), as
    in `speech_files,targets` columns.

    Raises:
        TiffinError: espeak-ng (or text2wave, when "festival" is a voice) is not installed, or
            fewer `sentences` than `count`.
    """
    import csv
    import shutil

    from tiffin.errors import TiffinError

    voices = voices or ["en-us", "en-gb"]
    if shutil.which("espeak-ng") is None:
        raise TiffinError("espeak-ng is not installed; install it (Debian/Ubuntu: apt-get install espeak-ng)")
    if FESTIVAL in voices and shutil.which("text2wave") is None:
        raise TiffinError("the festival voice needs text2wave; install it (Debian/Ubuntu: apt-get install festival)")
    if sentences is not None and len(sentences) < count:
        raise TiffinError(f"--count {count}: the text has {len(sentences)} usable sentences; give --count "
                          f"{len(sentences)} or fewer")
    rng = np.random.default_rng(seed)
    drawn = [sentences[i] for i in rng.permutation(len(sentences))[:count]] if sentences is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        if drawn is not None:
            sentence = drawn[i]
        else:
            sentence = " ".join(rng.choice(words, size=int(rng.integers(lengths[0], lengths[1] + 1))))
        name = f"utt{i:04d}.wav"
        speak(sentence, voices[i % len(voices)], out / name, rng)
        if augment:
            augment_file(out / name, rng)
        rows.append((name, sentence))
    with open(out / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["speech_files", "targets"])
        writer.writerows(rows)
    return rows


def speak(sentence: str, voice: str, path: Path, rng: np.random.Generator) -> None:
    """Write `sentence` spoken by `voice` to the wav file `path`, at a random speed and pitch."""
    import subprocess

    if voice == FESTIVAL:
        stretch = f"(Parameter.set 'Duration_Stretch {rng.uniform(0.8, 1.25):.2f})"
        subprocess.run(["text2wave", "-o", str(path), "-eval", stretch], input=sentence, text=True,
                       check=True, capture_output=True)
        return
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(rng.integers(130, 190))),
                    "-p", str(int(rng.integers(30, 70))), "-w", str(path), sentence], check=True, capture_output=True)


def augment_file(path: Path, rng: np.random.Generator) -> None:
    """Random gain, background noise (10-40 dB SNR) and, one time in four, 8 kHz band-limiting, in place."""
    import soundfile as sf

    from tiffin.audio_io import resample

    wave, rate = sf.read(str(path), dtype="float32")
    if rng.random() < 0.25:
        wave = resample(resample(wave, rate, 8000), 8000, rate)[: len(wave)]
    power = float(np.mean(wave**2)) + 1e-12
    snr_db = rng.uniform(10, 40)
    wave = wave + rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), len(wave)).astype(np.float32)
    wave = wave / (np.abs(wave).max() + 1e-9) * rng.uniform(0.2, 0.95)
    sf.write(str(path), wave.astype(np.float32), rate, subtype="PCM_16")
