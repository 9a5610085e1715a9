"""Audio loading for every stage: a file in, mono float32 at the model's rate out.

soundfile reads wav/ogg/mp3 (and more); FLAC and anything else FFmpeg decodes (m4a, opus,
the audio track of a video) goes through PyAV. Resampling is a numpy port of
torchaudio's windowed-sinc `resample` (a test holds them equal), so training, prediction and
serving share one torch-free function. Exercised by `tiffin train speech` and `tiffin predict`.
"""

from __future__ import annotations

import functools
import math
import os
import struct
from pathlib import Path

import numpy as np

from tiffin.errors import MediaError, truncation_note

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".webm", ".wma", ".aiff", ".aif")


def is_audio_file(path: Path) -> bool:
    """True for a visible file whose suffix is an audio format tiffin reads."""
    return path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith(".")


def read_audio(path: str | Path, start: float = 0.0, end: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32 at its own sample rate (channels averaged); with `start`/`end`
    (seconds), only that span of it (a Kaldi segment, a CSV row's start/end): wav and flac read
    just those frames.

    Raises:
        MediaError: missing, empty, unreadable, no audio, non-finite samples, or a span outside it.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise MediaError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise MediaError(path, "is empty (0 bytes)")
    import soundfile as sf

    try:
        if _is_flac(path):
            # a full test run segfaulted in the test that reads a FLAC cut short, which libsndfile's
            # decoder meets with "lost sync" (suspected, not proven); FFmpeg's keeps what decoded
            raise ValueError("FLAC: decoded by FFmpeg")
        with sf.SoundFile(path) as audio:  # opened once: the rate places the span, then only its frames are read
            rate = audio.samplerate
            first = round(start * rate)
            if first:
                audio.seek(min(first, audio.frames))
            data = audio.read(-1 if end is None else max(0, round(end * rate) - first), dtype="float32",
                              always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        data, rate = _read_with_pyav(path)
        first, last = round(start * rate), None if end is None else round(end * rate)
        data = data[first:last]
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if wave.size == 0:
        if start or end is not None:
            raise MediaError(path, f"has no audio from {start:g} s to {'its end' if end is None else f'{end:g} s'}")
        raise MediaError(path, "has no audio samples")
    if not np.isfinite(wave).all():
        raise MediaError(path, "has NaN or infinite samples")
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate)


def _is_flac(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"fLaC"


def _read_with_pyav(path: str) -> tuple[np.ndarray, int]:
    import av

    chunks, rate = [], 0
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MediaError(path, "has no audio stream; give an audio file")
            stream = container.streams.audio[0]
            rate = stream.rate
            for frame in container.decode(stream):
                # to_ndarray gives [channels, samples] for planar formats, [1, samples*channels] packed
                raw = frame.to_ndarray()
                array = raw.astype(np.float32)
                if not frame.format.is_planar:
                    array = array.reshape(-1, len(frame.layout.channels)).T
                if np.issubdtype(raw.dtype, np.integer):
                    array /= float(np.iinfo(raw.dtype).max) + 1
                chunks.append(array)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        if not chunks:  # an error after audio decoded is a file cut short: keep what decoded (audio_truncation says so)
            reason = (getattr(exc, "strerror", None) or str(exc)).strip().splitlines()[0][:160]
            raise MediaError(path, f"cannot be read as audio ({reason})") from None
    if not chunks:
        raise MediaError(path, "has no decodable audio")
    return np.concatenate(chunks, axis=1).T, rate


def audio_duration(path: str | Path) -> float | None:
    """Seconds of audio a file's headers announce, without decoding it (None when they don't say).

    Serving checks this against its limit before decoding, so a long upload costs no memory.
    """
    import soundfile as sf

    try:
        if not _is_flac(str(path)):  # FLAC through FFmpeg only (read_audio says why)
            info = sf.info(str(path))
            return info.frames / info.samplerate if info.samplerate else None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        pass
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return container.duration / 1e6 if container.duration else None
    except (av.FFmpegError, OSError, ValueError, IndexError):
        return None


def _wav_data_seconds(path: str | Path) -> float | None:
    """Seconds a RIFF/WAVE header's data chunk announces (libsndfile reports what is there instead);
    None for other files and for streamed wavs that leave the size unset."""
    with open(path, "rb") as f:
        head = f.read(65536)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, rate, block = 12, 0, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if chunk == b"fmt " and pos + 22 <= len(head):
            rate, block = struct.unpack("<I", head[pos + 12 : pos + 16])[0], struct.unpack("<H", head[pos + 20 : pos + 22])[0]
        elif chunk == b"data":
            return size / block / rate if rate and block and size not in (0, 0xFFFFFFFF) else None
        pos += 8 + size + (size & 1)
    return None


def audio_truncation(path: str | Path, seconds: float) -> str | None:
    """A line saying a recording is cut short, when its headers announce well over the `seconds` decoded."""
    try:
        declared = _wav_data_seconds(path)
    except OSError:
        return None
    declared = declared if declared is not None else audio_duration(path)
    if declared is not None and declared - seconds > max(0.25, 0.02 * declared):
        return truncation_note(seconds, declared)
    return None


def load_audio(path: str | Path, sample_rate: int, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """Mono float32 waveform at `sample_rate` (of the span `start`-`end` s): what every stage feeds a speech model."""
    wave, rate = read_audio(path, start, end)
    return resample(wave, rate, sample_rate)


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99) -> tuple[np.ndarray, int]:
    # Same kernel as torchaudio.functional.resample(lowpass_filter_width=6, rolloff=0.99, hann window).
    # Cached (read-only): building it was most of a 4 s 22.05 kHz file's resampling time.
    base = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx[None, :]) * base
    t = np.clip(t, -width_zeros, width_zeros)
    window = np.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(t == 0, 1.0, np.sin(t) / t)
    kernel = (sinc * window * base / orig).astype(np.float32)
    kernel.flags.writeable = False
    return kernel, width


def resample(wave: np.ndarray, orig: int, new: int, block: int = 4096) -> np.ndarray:
    """Resample a 1-D float32 waveform from `orig` Hz to `new` Hz (windowed sinc, torchaudio's).

    Works in blocks of output frames so memory stays bounded for hours of audio.
    """
    if orig == new:
        return wave.astype(np.float32, copy=False)
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    kernel, width = _sinc_kernel(orig, new)
    taps = kernel.shape[1]
    padded = np.pad(wave.astype(np.float32, copy=False), (width, width + orig))
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)[::orig]
    out = np.concatenate([(windows[i : i + block] @ kernel.T).reshape(-1) for i in range(0, len(windows), block)])
    return out[: math.ceil(new * len(wave) / orig)]
