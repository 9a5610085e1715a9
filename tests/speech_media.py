"""Generated recordings for speech tests: tone sequences that stand in for words (no TTS needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

WORDS = ["one", "two", "red", "cat", "go", "up"]


def utterance(words: list[str], rate: int = 16000, rng: np.random.Generator | None = None) -> np.ndarray:
    """Each word a short chord keyed by its letters, separated by silence."""
    rng = rng or np.random.default_rng(0)
    parts = []
    for word in words:
        t = np.arange(int(rate * (0.12 + 0.05 * len(word)))) / rate
        chord = sum(np.sin(2 * np.pi * (200 + 40 * (ord(c) - 96)) * t) for c in word) / len(word)
        parts += [0.4 * chord, np.zeros(int(rate * 0.08))]
    wave = np.concatenate(parts) + rng.normal(0, 0.01, sum(len(p) for p in parts))
    return wave.astype(np.float32)


def write_corpus(folder: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n recordings in assorted formats, rates and channel counts; returns (file name, sentence)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    formats = [(".wav", 16000, 1), (".flac", 22050, 1), (".wav", 44100, 2), (".ogg", 8000, 1)]
    rows = []
    for i in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        suffix, rate, channels = formats[i % len(formats)]
        wave = utterance(words, rate, rng)
        data = np.stack([wave, wave], 1) if channels == 2 else wave
        name = f"u{i:03d}{suffix}"
        sf.write(folder / name, data, rate)
        rows.append((name, " ".join(words)))
    return rows
