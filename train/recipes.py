"""The numbers of the embedded models' recipes (defaults: the shipped models).

Kept apart from train/pretrain.py, which imports Lightning, so the CLI can show these defaults
without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WORD_LIST = Path("/usr/share/dict/words")  # Debian's wamerican


@dataclass
class SpeechRecipe:
    """`tiffin/tiny-en`: generated English speech, many voices, Scottish held out."""

    sentences: int = 2400
    val_sentences: int = 150
    scottish_sentences: int = 60
    epochs: int = 16
    batch_size: int = 16
    learning_rate: float = 1e-3
    seed: int = 0
    word_list: str = str(WORD_LIST)
    festival: bool = True


@dataclass
class VideoRecipe:
    """`tiffin/tiny-motion`: x3d_xs at 8 frames x 64 px on generated motion classes."""

    per_class: int = 40
    val_per_class: int = 8
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 3e-3
    seed: int = 0
