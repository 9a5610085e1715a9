"""Character vocabularies for CTC speech models: text normalisation, encoding, greedy decoding.

Torch-free (numpy only): training, prediction and serving turn text into labels and logits
into text with the same code. The default vocabulary is laid out exactly as
facebook/wav2vec2-base-960h's, so its CTC head works unchanged.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from tiffin.errors import TiffinError

PAD, BOS, EOS, UNK, DELIMITER = "<pad>", "<s>", "</s>", "<unk>", "|"
SPECIALS = (PAD, BOS, EOS, UNK, DELIMITER)

# facebook/wav2vec2-base-960h's vocab.json, in id order (letters by frequency in LibriSpeech).
BASE_960H_TOKENS = SPECIALS + tuple("ETAONIHSRDLUMWCFGYPBVK'XJQZ")

# Typographic variants mapped before the vocabulary is consulted.
_EQUIVALENT = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "-": " ", "\u2013": " ", "\u2014": " "}


@dataclass
class Normalised:
    """A transcript in vocabulary terms, with what normalisation had to leave out."""

    text: str
    punctuation: Counter = field(default_factory=Counter)
    unknown: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Vocabulary:
    """Tokens in id order; id 0 (`<pad>`) is the CTC blank, `|` separates words."""

    tokens: tuple[str, ...] = BASE_960H_TOKENS

    def __len__(self) -> int:
        return len(self.tokens)

    # Derived tables are computed once per vocabulary: normalise/encode run for every transcript.
    @cached_property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def blank_id(self) -> int:
        return self.tokens.index(PAD)

    @cached_property
    def case(self) -> str | None:
        """'upper' or 'lower' when every letter of the vocabulary has that case, else None."""
        letters = [t for t in self.tokens if len(t) == 1 and t.isalpha() and t.upper() != t.lower()]
        if letters and all(t.isupper() for t in letters):
            return "upper"
        if letters and all(t.islower() for t in letters):
            return "lower"
        return None

    def normalise(self, text: str) -> Normalised:
        """Fit a transcript to the vocabulary: case, spacing, punctuation it lacks.

        Punctuation missing from the vocabulary is removed; any other character it lacks
        (digits, accented letters of another language ...) is left out and counted in
        `unknown`, so callers can report it.
        """
        text = unicodedata.normalize("NFKC", text)
        text = text.upper() if self.case == "upper" else text.lower() if self.case == "lower" else text
        known = self.index
        out, result = [], Normalised("")
        for ch in text:
            ch = _EQUIVALENT.get(ch, ch) if ch not in known else ch
            if ch.isspace() or ch == DELIMITER:
                out.append(" ")
            elif ch in known:
                out.append(ch)
            elif unicodedata.category(ch).startswith("P"):
                result.punctuation[ch] += 1
            else:
                result.unknown[ch] += 1
        result.text = " ".join("".join(out).split())
        return result

    def encode(self, normalised_text: str) -> list[int]:
        """Ids of a normalised transcript (words joined by `|`)."""
        index = self.index
        return [index[DELIMITER] if ch == " " else index[ch] for ch in normalised_text]

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """Greedy CTC: collapse repeats, drop blanks and special tokens, `|` becomes a space."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size == 0:
            return ""
        keep = np.ones(ids.size, dtype=bool)
        keep[1:] = ids[1:] != ids[:-1]
        chars = []
        for i in ids[keep]:
            token = self.tokens[int(i)]
            if token == DELIMITER:
                chars.append(" ")
            elif token not in SPECIALS:
                chars.append(token)
        return " ".join("".join(chars).split())

    def decode_logits(self, logits: np.ndarray) -> str:
        """Greedy transcript of one utterance's logits [frames, vocab].

        Raises:
            TiffinError: the model has more outputs than the vocabulary has tokens.
        """
        logits = np.asarray(logits)
        if logits.shape[-1] > len(self.tokens):  # a token id past the list: a vocabulary that is not the model's
            raise TiffinError(f"the model has {logits.shape[-1]} outputs but its vocabulary {len(self.tokens)} tokens; "
                              "give the vocabulary it was trained with (export it again)")
        return self.decode(logits.argmax(-1))

    @classmethod
    def from_texts(cls, texts: list[str]) -> "Vocabulary":
        """A character vocabulary for a new language: specials, then the characters seen (lower case)."""
        chars: set[str] = set()
        for text in texts:
            for ch in unicodedata.normalize("NFKC", text).lower():
                ch = _EQUIVALENT.get(ch, ch)
                if not ch.isspace() and not unicodedata.category(ch).startswith("P") or ch == "'":
                    chars.add(ch)
        return cls(SPECIALS + tuple(sorted(chars - set(SPECIALS))))


def edit_distance(a: list[str] | str, b: list[str] | str) -> int:
    """Levenshtein distance between two sequences (characters or words): rapidfuzz's C
    implementation, torch-free, the one definition training, evaluation and parity share."""
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(a, b)


def error_counts(references: list[str], hypotheses: list[str]) -> tuple[int, int, int, int]:
    """(word edits, reference words, character edits, reference characters) over a corpus."""
    words = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses))
    chars = sum(edit_distance(r, h) for r, h in zip(references, hypotheses))
    return words, sum(len(r.split()) for r in references), chars, sum(len(r) for r in references)


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus (WER, CER): edit operations over reference words / characters."""
    words, n_words, chars, n_chars = error_counts(references, hypotheses)
    return words / (n_words or 1), chars / (n_chars or 1)
