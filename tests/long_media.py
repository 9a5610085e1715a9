"""Long recordings for the long-speech tests and benchmarks: spoken sentences with long silences
between them, written block by block (never whole in memory) in compressed formats, so an hour
is a small file, as a podcast, a call recording or a mostly silent meeting is."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a stitch in time saves nine",
    "every cloud has a silver lining",
    "garrets reinvent bogs jabber",
    "the early bird catches the worm",
    "all that glitters is not gold",
    "actions speak louder than words",
]

# (soundfile format, subtype) of each suffix
FORMATS = {".mp3": ("MP3", "MPEG_LAYER_III"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
           ".opus": ("OGG", "OPUS"), ".wav": ("WAV", "PCM_16")}


def spoken(rate: int = 16000, voice: str = "en-us") -> list[np.ndarray]:
    """Each of SENTENCES spoken by espeak-ng, mono float32 at `rate`."""
    from tiffin.audio_io import resample

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
            wave, native = sf.read(wav, dtype="float32")
            out.append(resample(wave, native, rate) * 0.8)
    return out


def write_long(path: Path, seconds: float, every: float = 60.0, rate: int = 16000, channels: int = 1,
               sentences: list[np.ndarray] | None = None, sentences_rate: int = 16000) -> float:
    """A recording of `seconds`: a sentence at the start of every `every` seconds (cycling through
    `sentences`, spoken at `sentences_rate`), digital silence between, written in 10-second blocks
    at `rate` with `channels` (the sentence in each). Returns the seconds of speech in it."""
    from tiffin.audio_io import resample

    sentences = sentences if sentences is not None else spoken(sentences_rate)
    if rate != sentences_rate:
        sentences = [resample(s, sentences_rate, rate) for s in sentences]
    fmt, subtype = FORMATS[path.suffix.lower()]
    total, block = int(seconds * rate), int(10 * rate)
    starts = [int(k * every * rate) for k in range(int(np.ceil(seconds / every)))]
    said = 0.0
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, format=fmt, subtype=subtype) as f:
        for first in range(0, total, block):
            n = min(block, total - first)
            chunk = np.zeros(n, np.float32)
            for k, s in enumerate(starts):
                sentence = sentences[k % len(sentences)]
                lo, hi = max(s, first), min(s + len(sentence), first + n)
                if lo < hi:
                    chunk[lo - first : hi - first] = sentence[lo - s : hi - s]
                    said += (hi - lo) / rate
            f.write(np.stack([chunk] * channels, 1) if channels > 1 else chunk)
    return said
