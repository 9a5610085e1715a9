"""The generated corpus of odd and bad media that prediction and serving are tried with.

Each case is a file written at test time and what must come of it: `OK` (decoded and answered)
or the HTTP status and words of the reason. `tiffin predict` answers the OK cases and gives a
one-line `error` for the rest; the services answer the OK cases with 200 and the rest with
that status. README states how many cases there are (`len(CASES)`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import numpy as np
import soundfile as sf

from tests.helpers import write_frames

OK = 200
# The limits the services run with when they are tried with this corpus (the 8K frame cap is the default).
LIMITS = {"TIFFIN_MAX_UPLOAD_MB": 2, "TIFFIN_MAX_VIDEO_SECONDS": 5, "TIFFIN_MAX_VIDEO_PIXELS": 7680 * 4320,
          "TIFFIN_MAX_AUDIO_SECONDS": 14400}


@dataclass(frozen=True)
class Case:
    name: str
    field: str  # "video" or "audio": the service and model kind it is sent to
    file: str  # the file name written (its extension is what a user would give it)
    write: Callable[[Path, dict[str, Path]], None]  # writes the file; gets the good seed files
    status: int  # OK, or the HTTP status the services answer
    words: str = ""  # in the reason, for a refusal
    warns: str = ""  # in the answer's `warnings`, for an answer with a caveat (media cut short)

    @property
    def predict_answers(self) -> bool:
        """`tiffin predict` applies the decoding limits at their defaults (tiffin.limits) and has no
        upload limit: it answers what only the corpus's tighter serving settings refuse."""
        from tiffin.limits import LIMITS as DECODING

        defaults = {limit.env: limit.default for limit in DECODING.values()}
        tighter = [k for k, v in LIMITS.items() if str(v) != defaults.get(k)]
        return self.status == OK or self.words in tighter


def _bytes(data: bytes) -> Callable[[Path, dict[str, Path]], None]:
    return lambda path, seeds: path.write_bytes(data)


def _cut(seed: str, fraction: float) -> Callable[[Path, dict[str, Path]], None]:
    def write(path: Path, seeds: dict[str, Path]) -> None:
        data = seeds[seed].read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return write


def _frames(n: int, height: int, width: int, fps: int = 10, codec: str = "libx264", pts_ms: list[int] | None = None):
    def write(path: Path, seeds: dict[str, Path]) -> None:
        # smooth moving gradients: they compress well, so even 8K frames make a small upload
        ramp = (np.arange(width, dtype=np.uint16)[None, :] * 255 // max(width - 1, 1)).astype(np.uint8)
        frames = np.stack([np.broadcast_to((ramp + np.uint8(16 * i % 256))[..., None], (height, width, 3)) for i in range(n)])
        write_frames(path, frames, fps=fps, codec=codec, pts_ms=pts_ms)

    return write


def _cut_after(write: Callable[[Path, dict[str, Path]], None], fraction: float):
    """A file written by `write`, then cut to its first `fraction` of bytes (a download that stopped)."""

    def cut(path: Path, seeds: dict[str, Path]) -> None:
        write(path, seeds)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return cut


def _cut_at_frame(write: Callable[[Path, dict[str, Path]], None], frame: int):
    """A video written by `write`, cut where its `frame`-th packet starts (a download that stopped there)."""

    def cut(path: Path, seeds: dict[str, Path]) -> None:
        write(path, seeds)
        with av.open(str(path)) as container:
            position = [p.pos for p in container.demux(video=0) if p.size][frame]
        path.write_bytes(path.read_bytes()[:position])

    return cut


def _audio_only_mp4(path: Path, seeds: dict[str, Path]) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(16):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _sound(seconds: float | None = None, rate: int = 16000, channels: int = 1, subtype: str = "PCM_16",
           fmt: str = "WAV", poison: float | None = None):
    """The seed recording (speech), cut to `seconds`, at `rate`, in `channels`, `subtype` and `fmt`."""

    def write(path: Path, seeds: dict[str, Path]) -> None:
        from tiffin.audio_io import resample

        wave, seed_rate = sf.read(seeds["wav"], dtype="float32")
        wave = resample(wave, seed_rate, rate)[: int(seconds * rate) if seconds else None]
        if poison is not None:
            wave[len(wave) // 2] = poison
        data = np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave
        sf.write(path, data, rate, subtype=subtype, format=fmt)

    return write


def _encoded(codec: str, rate: int):
    """The seed recording encoded by FFmpeg (PyAV): aac in m4a, opus in ogg, as phones and browsers record."""

    def write(path: Path, seeds: dict[str, Path]) -> None:
        from tiffin.audio_io import resample

        wave, seed_rate = sf.read(seeds["wav"], dtype="float32")
        wave = resample(wave, seed_rate, rate)
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.layout = "mono"
            size = stream.codec_context.frame_size or 1024
            for i in range(0, len(wave), size):
                frame = av.AudioFrame.from_ndarray(wave[None, i : i + size], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = rate, i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    return write


def _silence(seconds: int, rate: int = 16000):
    def write(path: Path, seeds: dict[str, Path]) -> None:
        with sf.SoundFile(path, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
            block = np.zeros(rate * 60, np.int16)
            for _ in range(seconds // 60):
                f.write(block)

    return write


def _wav_header(path: Path, seeds: dict[str, Path]) -> None:
    """A 44-byte RIFF/WAVE header announcing 16 kHz mono 16-bit audio, and no samples."""
    path.write_bytes(b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
                     + b"data" + struct.pack("<I", 0))


_RANDOM = np.random.default_rng(0).bytes(5000)
_TEXT = b"just some text, not a video\n" * 40
_VFR_MS = [0, 30, 70, 200, 230, 500, 520, 900, 1000, 1400, 1450, 1800]

CASES: list[Case] = [
    # video: refused
    Case("zero-byte video", "video", "empty.mp4", _bytes(b""), 400, "empty"),
    Case("truncated mp4", "video", "truncated.mp4", _cut("mp4", 1 / 3), 422, "video:"),
    Case("random bytes as mp4", "video", "random.mp4", _bytes(_RANDOM), 422, "cannot be read"),
    Case("text renamed .mp4", "video", "text.mp4", _bytes(_TEXT), 422, "cannot be read"),
    Case("mkv cut shorter than a clip", "video", "stub.mkv", _cut_at_frame(_frames(80, 48, 64), 3), 422,
         "too little for one"),
    Case("audio-only mp4", "video", "audio-only.mp4", _audio_only_mp4, 422, "no video stream"),
    Case("wav sent as video", "video", "speech.wav", lambda p, s: p.write_bytes(s["wav"].read_bytes()), 422, "video"),
    Case("video over the duration limit", "video", "long.mp4", _frames(24, 32, 32, fps=4), 422, "TIFFIN_MAX_VIDEO_SECONDS"),
    Case("frames over 8K", "video", "huge.mp4", _frames(1, 4336, 7696, codec="mpeg4"), 422, "TIFFIN_MAX_VIDEO_PIXELS"),
    # video: odd but fine
    Case("1x1 video", "video", "tiny.mkv", _frames(8, 1, 1, codec="mpeg4"), OK),
    Case("8K video", "video", "8k.mp4", _frames(2, 4320, 7680, codec="mpeg4"), OK),
    Case("one-frame video", "video", "one.mp4", _frames(1, 48, 64), OK),
    Case("variable frame rate", "video", "vfr.mp4", _frames(len(_VFR_MS), 48, 64, pts_ms=_VFR_MS), OK),
    Case("vp9 webm", "video", "clip.webm", _frames(10, 48, 64, codec="libvpx-vp9"), OK),
    Case("truncated mkv", "video", "cut.mkv", _cut_at_frame(_frames(80, 48, 64), 30), OK, warns="truncated: only"),
    # audio: refused
    Case("zero-byte audio", "audio", "empty.wav", _bytes(b""), 400, "empty"),
    Case("header-only wav", "audio", "header.wav", _wav_header, 422, "audio:"),
    Case("random bytes as wav", "audio", "random.wav", _bytes(_RANDOM), 422, "cannot be read"),
    Case("truncated flac", "audio", "truncated.flac", _cut("flac", 0.02), 422, "audio:"),
    Case("video without sound", "audio", "silent.mp4", _frames(10, 32, 32), 422, "no audio"),
    Case("NaN samples", "audio", "nan.wav", _sound(subtype="FLOAT", poison=float("nan")), 422, "NaN"),
    Case("inf samples", "audio", "inf.wav", _sound(subtype="FLOAT", poison=float("inf")), 422, "inf"),
    Case("5 h of silence", "audio", "hours.flac", _silence(5 * 3600), 422, "TIFFIN_MAX_AUDIO_SECONDS"),
    # audio: odd but fine
    Case("truncated wav", "audio", "truncated.wav", _cut("wav", 0.5), OK, warns="truncated: only"),
    Case("truncated mp3", "audio", "truncated.mp3", _cut_after(_sound(fmt="MP3", subtype="MPEG_LAYER_III"), 0.5), OK,
         warns="truncated: only"),
    Case("0.01 s of audio", "audio", "blip.wav", _sound(0.01), OK),
    Case("8-bit wav", "audio", "u8.wav", _sound(subtype="PCM_U8"), OK),
    Case("24-bit wav", "audio", "s24.wav", _sound(subtype="PCM_24"), OK),
    Case("float wav", "audio", "float.wav", _sound(subtype="FLOAT"), OK),
    Case("6-channel wav", "audio", "surround.wav", _sound(channels=6), OK),
    Case("8 kHz", "audio", "phone.wav", _sound(rate=8000), OK),
    Case("96 kHz flac", "audio", "studio.flac", _sound(rate=96000, subtype="PCM_24", fmt="FLAC"), OK),
    Case("ogg vorbis", "audio", "clip.ogg", _sound(rate=22050, subtype="VORBIS", fmt="OGG"), OK),
    Case("m4a (aac) at 44.1 kHz", "audio", "phone.m4a", _encoded("aac", 44100), OK),
    Case("opus at 48 kHz", "audio", "browser.opus", _encoded("libopus", 48000), OK),
]


def write_corpus(folder: Path, video: Path, speech: Path) -> list[tuple[Case, Path]]:
    """Write every case into `folder`, from a good mp4 `video` and a good wav `speech` recording."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = {"mp4": video, "wav": speech, "flac": folder / "seed.flac"}
    wave, rate = sf.read(speech, dtype="float32")
    sf.write(seeds["flac"], wave, rate, format="FLAC")
    written = []
    for case in CASES:
        path = folder / case.file
        case.write(path, seeds)
        written.append((case, path))
    return written

