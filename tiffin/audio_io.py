"""Audio loading for every stage: a file in, mono float32 at the model's rate out.

soundfile reads wav/ogg/mp3 (and more); FLAC and anything else FFmpeg decodes (m4a, opus,
the audio track of a video) goes through PyAV, opened as data (tiffin.media_open). Audio is
decoded in blocks, mixed down and resampled as it comes, so memory holds the result at the
model's rate, and decoding stops at the limits of tiffin.limits. Resampling is a numpy port of
torchaudio's windowed-sinc `resample` (a test holds them equal) for every common rate, soxr for
ratios whose sinc table would be large, so training, prediction and serving share one
torch-free function. Exercised by `tiffin train speech` and `tiffin predict`.
"""

from __future__ import annotations

import functools
import itertools
import math
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

from tiffin.errors import MediaError, truncation_note
from tiffin.limits import DecodeBudget
from tiffin.media_open import open_container, regular_file

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".webm", ".wma", ".aiff", ".aif")


def is_audio_file(path: Path) -> bool:
    """True for a visible file whose suffix is an audio format tiffin reads."""
    return path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith(".")


def read_audio(path: str | Path, start: float = 0.0, end: float | None = None,
               budget: DecodeBudget | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32 at its own sample rate (channels averaged as it decodes); with
    `start`/`end` (seconds), only that span of it (a Kaldi segment, a CSV row's start/end): wav
    and flac read just those frames. Decoding stops at the audio limit (tiffin.limits).

    Raises:
        MediaError: missing, empty, unreadable, no audio, non-finite samples, a span outside it,
            or over a limit.
    """
    kept: list[np.ndarray] = []
    rate = 0
    for block, rate in _blocks(str(path), start, end, budget or DecodeBudget(str(path))):
        kept.append(block)
    return _joined(kept, str(path), start, end), rate


def stream_audio(path: str | Path, sample_rate: int, start: float = 0.0, end: float | None = None,
                 budget: DecodeBudget | None = None) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `sample_rate` (of the span `start`-`end` s), as the file decodes: the
    one way every stage reads a recording, so memory holds one block whatever its length. Blocks
    joined equal load_audio's waveform. A recording whose headers declare more than the audio
    limit is refused before decoding, one that holds more is cut off at the limit and refused;
    the decoding-time limit counts the time spent decoding, not the consumer's between blocks.

    Raises:
        MediaError: as read_audio (an empty recording once the file ends).
    """
    path = str(path)
    budget = budget or DecodeBudget(path)
    if (start, end) == (0.0, None):
        declared = audio_duration(path)
        if declared is not None:
            budget.audio_seconds(declared)
    resampler = None
    given = False
    for block, rate in _blocks(path, start, end, budget):
        resampler = resampler or Resampler(rate, sample_rate)
        out = resampler.push(block)
        if len(out):
            given = True
            yield out
    tail = resampler.flush() if resampler is not None else np.zeros(0, np.float32)
    if len(tail):
        given = True
        yield tail
    if not given:
        _joined([], path, start, end)  # raises: no audio (in the span)


def load_audio(path: str | Path, sample_rate: int, start: float = 0.0, end: float | None = None,
               budget: DecodeBudget | None = None) -> np.ndarray:
    """Mono float32 waveform at `sample_rate` (of the span `start`-`end` s): stream_audio's blocks
    joined, for what needs the whole utterance at once (training samples, calibration).

    Raises:
        MediaError: as read_audio.
    """
    return _joined(list(stream_audio(path, sample_rate, start, end, budget)), str(path), start, end)


def _joined(blocks: list[np.ndarray], path: str, start: float, end: float | None) -> np.ndarray:
    wave = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if wave.size == 0:
        if start or end is not None:
            raise MediaError(path, f"has no audio from {start:g} s to {'its end' if end is None else f'{end:g} s'}")
        raise MediaError(path, "has no audio samples")
    return np.ascontiguousarray(wave, dtype=np.float32)


# A decoded block holds at most this many samples over all channels (4 MB of float32): a header
# announcing thousands of channels cannot make one read allocate gigabytes.
_BLOCK_SAMPLES = 1 << 20
_MAX_RATE = 1_000_000


class _Fallback(Exception):
    """soundfile cannot read the file and gave nothing: FFmpeg tries."""


def _blocks(path: str, start: float, end: float | None, budget: DecodeBudget) -> Iterator[tuple[np.ndarray, int]]:
    """`path`'s span as (mono float32 block, the file's rate). Samples are counted against the
    audio limit as they come, and the time spent decoding against its own (paused while the
    consumer holds a block)."""
    regular_file(path)
    seen = 0
    budget.resume()
    try:
        source = None
        if not _is_flac(path):
            source = _decode_soundfile(path, start, end)
            try:
                first = next(source)
            except _Fallback:
                source = None
            except StopIteration:
                return
            else:
                source = itertools.chain([first], source)
        for block, rate in source or _decode_pyav(path, start, end):
            if not np.isfinite(block).all():
                raise MediaError(path, "has NaN or infinite samples")
            seen += len(block)
            budget.audio_seconds(seen / rate)
            budget.tick()
            if len(block):
                budget.pause()
                yield block, rate
                budget.resume()
    finally:
        budget.pause()


def _is_flac(path: str) -> bool:
    # a full test run segfaulted in the test that reads a FLAC cut short, which libsndfile's
    # decoder meets with "lost sync" (suspected, not proven); FFmpeg's keeps what decoded
    with open(path, "rb") as f:
        return f.read(4) == b"fLaC"


def _mono(data: np.ndarray) -> np.ndarray:
    """[samples, channels] -> [samples], channels averaged."""
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def _checked_rate(path: str, rate: int) -> int:
    if not 0 < rate <= _MAX_RATE:
        raise MediaError(path, f"declares a sample rate of {rate} Hz; tiffin reads 1 Hz to {_MAX_RATE} Hz")
    return int(rate)


def _decode_soundfile(path: str, start: float, end: float | None) -> Iterator[tuple[np.ndarray, int]]:
    import soundfile as sf

    errors = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)
    try:
        audio = sf.SoundFile(path)
    except errors:
        raise _Fallback() from None
    given = 0
    with audio:
        rate = _checked_rate(path, audio.samplerate)
        first = round(start * rate)
        remaining = None if end is None else max(0, round(end * rate) - first)
        size = max(1, _BLOCK_SAMPLES // max(1, audio.channels))
        try:
            if first:
                audio.seek(min(first, audio.frames))
            while remaining is None or remaining > 0:
                data = audio.read(size if remaining is None else min(size, remaining), dtype="float32", always_2d=True)
                if not len(data):
                    break
                if remaining is not None:
                    remaining -= len(data)
                given += 1
                yield _mono(data), rate
        except errors:
            if not given:
                raise _Fallback() from None
            # a read failing after audio came is a file cut short: keep what decoded (audio_truncation says so)


def _decode_pyav(path: str, start: float, end: float | None) -> Iterator[tuple[np.ndarray, int]]:
    import av

    given, rate, position = 0, 0, 0
    try:
        with open_container(path) as container:
            if not container.streams.audio:
                raise MediaError(path, "has no audio stream; give an audio file")
            stream = container.streams.audio[0]
            # a stream of a codec FFmpeg does not know has no decoder context, and so no rate
            rate = _checked_rate(path, (stream.codec_context.sample_rate or 0) if stream.codec_context else 0)
            first, last = round(start * rate), None if end is None else round(end * rate)
            for frame in container.decode(stream):
                # to_ndarray gives [channels, samples] for planar formats, [1, samples*channels] packed
                raw = frame.to_ndarray()
                array = raw.astype(np.float32)
                if not frame.format.is_planar:
                    array = array.reshape(-1, len(frame.layout.channels)).T
                if np.issubdtype(raw.dtype, np.integer):
                    array /= float(np.iinfo(raw.dtype).max) + 1
                mono = array.mean(axis=0, dtype=np.float32) if len(array) > 1 else array[0]
                lo, hi = max(0, first - position), None if last is None else max(0, last - position)
                position += len(mono)
                given += 1
                yield mono[lo:hi], rate
                if last is not None and position >= last:
                    break
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        if not given:  # an error after audio decoded is a file cut short: keep what decoded (audio_truncation says so)
            reason = (getattr(exc, "strerror", None) or str(exc)).strip().splitlines()[0][:160]
            raise MediaError(path, f"cannot be read as audio ({reason})") from None
    if not given:
        raise MediaError(path, "has no decodable audio")


def audio_duration(path: str | Path) -> float | None:
    """Seconds of audio a file's headers announce, without decoding it (None when they don't say).

    Serving checks this against its limit before decoding, so a long upload costs no memory.
    """
    import soundfile as sf

    path = regular_file(path)
    try:
        if not _is_flac(path):  # FLAC through FFmpeg only (read_audio says why)
            info = sf.info(path)
            return info.frames / info.samplerate if info.samplerate else None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        pass
    import av

    try:
        with open_container(path) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return container.duration / 1e6 if container.duration else None
    except (av.FFmpegError, OSError, ValueError, IndexError, AttributeError, MediaError):
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


def _kernel_width(orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99) -> int:
    return math.ceil(width_zeros * orig / (min(orig, new) * rolloff))


# Largest sinc table (output phases x taps) built: 1M float32, 4 MB. The rates people record at
# (8, 11.025, 16, 22.05, 32, 44.1, 48, 96 kHz to 16 kHz) need 0.3M at most; a rate sharing no
# factor with the model's (4001 Hz) would need 16000 x 4015, 2.5 GB with its temporaries.
_MAX_TABLE = 1 << 20


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99) -> tuple[np.ndarray, int]:
    # Same kernel as torchaudio.functional.resample(lowpass_filter_width=6, rolloff=0.99, hann window).
    # Cached (read-only): building it was most of a 4 s 22.05 kHz file's resampling time.
    base = min(orig, new) * rolloff
    width = _kernel_width(orig, new, width_zeros, rolloff)
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


class Resampler:
    """Resamples a stream of 1-D float32 blocks from `orig` Hz to `new` Hz: `push` each block,
    `flush` at the end; the pieces joined equal `resample` of the whole.

    Where the reduced ratio's sinc table is small (every common rate), torchaudio's windowed sinc
    (a test holds them equal; the embedded speech model was trained through it), computed window
    by window as input arrives. Where it would be large (a rate sharing no factor with the
    model's), soxr's polyphase resampler, whose memory is bounded whatever the ratio.
    """

    def __init__(self, orig: int, new: int, block: int = 4096):
        g = math.gcd(orig, new)
        self.orig, self.new, self.block = orig // g, new // g, block
        self.seen = self.emitted = 0
        self.kernel, self.stream = None, None
        if orig == new:
            return
        width = _kernel_width(self.orig, self.new)
        if self.new * (2 * width + self.orig) <= _MAX_TABLE:
            self.kernel, self.width = _sinc_kernel(self.orig, self.new)
            self.pending = np.zeros(self.width, np.float32)  # the left zero padding
            # blocks pushed since the last run, joined only once a whole block of windows is there:
            # joining on every push copied the pending input (up to 7 MB) once per decoded frame
            self.waiting: list[np.ndarray] = []
            self.waiting_len = 0
        else:
            import soxr

            self.stream = soxr.ResampleStream(orig, new, 1, dtype="float32", quality="HQ")

    def push(self, wave: np.ndarray) -> np.ndarray:
        """The output the input so far determines."""
        wave = np.asarray(wave, dtype=np.float32)
        self.seen += len(wave)
        if self.stream is not None:
            return self.stream.resample_chunk(wave, last=False)
        if self.kernel is None:
            return wave
        self.waiting.append(wave)
        self.waiting_len += len(wave)
        if len(self.pending) + self.waiting_len < (self.block - 1) * self.orig + self.kernel.shape[1]:
            return np.zeros(0, np.float32)  # not a whole block of windows yet
        return self._windows()

    def flush(self) -> np.ndarray:
        """The rest of the output, after the last block."""
        if self.stream is not None:
            return self.stream.resample_chunk(np.zeros(0, np.float32), last=True)
        if self.kernel is None:
            return np.zeros(0, np.float32)
        self.waiting.append(np.zeros(self.width + self.orig, np.float32))
        before = self.emitted
        return self._windows(last=True)[: max(0, math.ceil(self.new * self.seen / self.orig) - before)]

    def _windows(self, last: bool = False) -> np.ndarray:
        if self.waiting:
            self.pending = np.concatenate([self.pending, *self.waiting])
            self.waiting, self.waiting_len = [], 0
        taps = self.kernel.shape[1]
        n = (len(self.pending) - taps) // self.orig + 1 if len(self.pending) >= taps else 0
        if not last:
            # whole blocks only, aligned as `resample` of the whole wave aligns them: the same
            # matrix products, so streamed output is bit-identical to it (BLAS rounds by shape)
            n -= n % self.block
        if n <= 0:
            return np.zeros(0, np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(self.pending[: (n - 1) * self.orig + taps], taps)[:: self.orig]
        out = np.concatenate([(windows[i : i + self.block] @ self.kernel.T).reshape(-1)
                              for i in range(0, n, self.block)])
        self.pending = self.pending[n * self.orig :].copy()
        self.emitted += len(out)
        return out


def resample(wave: np.ndarray, orig: int, new: int, block: int = 4096) -> np.ndarray:
    """Resample a 1-D float32 waveform from `orig` Hz to `new` Hz (Resampler over one block):
    memory bounded by the audio, whatever the rates."""
    if orig == new:
        return wave.astype(np.float32, copy=False)
    resampler = Resampler(orig, new, block)
    return np.concatenate([resampler.push(wave), resampler.flush()])
