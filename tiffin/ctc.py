"""CTC vocabularies for speech models: text normalisation, encoding, greedy decoding.

Torch-free (numpy only): training, prediction and serving turn text into labels and logits
into text with the same code. Two kinds: characters with `|` between words (wav2vec2 and most
raw-waveform families; the default vocabulary is laid out exactly as
facebook/wav2vec2-base-960h's, so its CTC head works unchanged), and word pieces whose word
starts are marked `▁` (SentencePiece's; Parakeet's), with the blank wherever the model has it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from tiffin.errors import TiffinError

PAD, BOS, EOS, UNK, DELIMITER = "<pad>", "<s>", "</s>", "<unk>", "|"
SPECIALS = (PAD, BOS, EOS, UNK, DELIMITER)
WORD_START = "\u2581"  # SentencePiece's word-start marker: a piece "▁the" begins a word
# tokens that spell nothing: <unk>, <pad>, <|endoftext|>, byte pieces <0x0A> ..., and the [PAD] / [UNK]
# of vocabularies made the way Hugging Face's fine-tuning guides make them
_MARKUP = re.compile(r"^(<[^<>]*>|\[[^\[\]]+\])$")

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
    """Tokens in id order, the CTC blank's id, and how tokens spell words.

    Characters (`word_start` None): `|` separates words, `<pad>` is the blank unless `blank`
    says otherwise. Word pieces (`word_start` "▁"): a piece starting with the marker begins a
    word, `<...>` pieces spell nothing, and words are spelt as a SentencePiece BPE tokenizer spells
    them, merging by piece id (the merge order of SentencePiece's BPE vocabularies, which
    transformers' converter keeps), so no tokenizer is needed to train, decode or build a lexicon.
    """

    tokens: tuple[str, ...] = BASE_960H_TOKENS
    blank: int | None = None  # the CTC blank's id; None: `<pad>`'s
    word_start: str | None = None  # word pieces' word-start marker; None: characters, `|` between words

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def of_spec(cls, spec) -> "Vocabulary":
        """The vocabulary of a tiffin.spec.SpeechSpec."""
        return cls(tuple(spec.vocab), spec.blank_id, spec.word_start)

    @classmethod
    def of_artifact(cls, meta: dict) -> "Vocabulary":
        """The vocabulary of a speech artifact's tiffin.json (top-level `vocab`, preprocessing's blank and kind)."""
        pre = meta.get("preprocessing") or {}
        return cls(tuple(meta["vocab"]), pre.get("blank_id"), pre.get("word_start"))

    @property
    def pieces(self) -> bool:
        """True for a word-piece vocabulary."""
        return self.word_start is not None

    # Derived tables are computed once per vocabulary: normalise/encode run for every transcript.
    @cached_property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def blank_id(self) -> int:
        return self.blank if self.blank is not None else self.tokens.index(PAD)

    @cached_property
    def silent(self) -> frozenset[int]:
        """Ids that spell nothing: the blank and the special tokens."""
        if self.pieces:
            quiet = {i for i, t in enumerate(self.tokens) if _MARKUP.match(t) or not t}
        else:
            quiet = {i for i, t in enumerate(self.tokens) if t in SPECIALS and t != DELIMITER
                     or len(t) > 2 and _MARKUP.match(t)}
        return frozenset(quiet | {self.blank_id})

    @cached_property
    def characters(self) -> frozenset[str]:
        """The characters transcripts may keep: the one-character tokens (word pieces: also those
        after the word-start marker)."""
        if not self.pieces:
            return frozenset(t for t in self.tokens if len(t) == 1)
        mark, silent = self.word_start, self.silent
        spelt = [t[len(mark):] if t.startswith(mark) else t for i, t in enumerate(self.tokens) if i not in silent]
        return frozenset(t for t in spelt if len(t) == 1)

    @cached_property
    def case(self) -> str | None:
        """'upper' or 'lower' when every letter of the vocabulary has that case, else None."""
        letters = [t for t in self.characters if t.isalpha() and t.upper() != t.lower()]
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
        known = self.characters
        out, result = [], Normalised("")
        for ch in text:
            ch = _EQUIVALENT.get(ch, ch) if ch not in known else ch
            if ch.isspace() or ch == (self.word_start or DELIMITER):
                out.append(" ")
            elif ch in known:
                out.append(ch)
            elif unicodedata.category(ch).startswith("P"):
                result.punctuation[ch] += 1
            else:
                result.unknown[ch] += 1
        words = "".join(out).split()
        if self.pieces:  # a word no sequence of pieces spells (a letter only some word start has) is left out
            for word in [w for w in words if self.spell(w) is None]:
                result.unknown[word] += 1
            words = [w for w in words if self.spell(w) is not None]
        result.text = " ".join(words)
        return result

    def encode(self, normalised_text: str) -> list[int]:
        """Ids of a normalised transcript (characters: words joined by `|`; word pieces: each word spelt)."""
        if self.pieces:
            return [i for word in normalised_text.split() for i in self.spell(word)]
        index = self.index
        return [index[DELIMITER] if ch == " " else index[ch] for ch in normalised_text]

    def spell(self, word: str) -> tuple[int, ...] | None:
        """Word pieces: the ids spelling `word` (marker first) as SentencePiece's BPE does, merging
        the adjacent pair whose merged piece has the lowest id first (the longer left part on a
        tie); None when its characters have no pieces. Characters: the word's letters."""
        if not self.pieces:
            return tuple(self.index[ch] for ch in word) if word and all(ch in self.index for ch in word) else None
        memo = self._spelt
        if word not in memo:
            memo[word] = self._spell(word)
        return memo[word]

    @cached_property
    def _spelt(self) -> dict[str, tuple[int, ...] | None]:
        return {}

    def _spell(self, word: str) -> tuple[int, ...] | None:
        index, silent = self.index, self.silent
        symbols = list(self.word_start + word)
        if not word or any(index.get(s) is None or index[s] in silent for s in symbols[1:]):
            return None
        if symbols[0] not in index:  # no lone marker: the first letter must merge with it
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
            if symbols[0] not in index:
                return None
        while len(symbols) > 1:
            best = None
            for i in range(len(symbols) - 1):
                merged = index.get(symbols[i] + symbols[i + 1])
                if merged is not None and merged not in silent:
                    rank = (merged, -len(symbols[i]))
                    if best is None or rank < best[0]:
                        best = (rank, i)
            if best is None:
                break
            i = best[1]
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        return tuple(index[s] for s in symbols)

    def spellings(self, word: str, most: int = 4) -> list[tuple[int, ...]]:
        """Ways the model may spell `word`, for a lexicon: characters, the one; word pieces, the
        BPE spelling (`spell`) first, then others in the fewest pieces, then in one piece more
        (longer pieces first), up to `most` in all."""
        first = self.spell(word)
        if first is None:
            return []
        if not self.pieces:
            return [first]
        text, index, silent = self.word_start + word, self.index, self.silent
        longest = max(len(t) for t in self.tokens)
        # fewest[i]: the fewest pieces spelling text[i:]
        fewest = [0] * (len(text) + 1) + [0]
        for i in range(len(text) - 1, -1, -1):
            options = [fewest[j] + 1 for j in range(i + 1, min(len(text), i + longest) + 1)
                       if index.get(text[i:j]) is not None and index[text[i:j]] not in silent
                       and fewest[j] < len(text) + 1]
            fewest[i] = min(options) if options else len(text) + 1
        found: list[tuple[int, ...]] = [first]

        def walk(i: int, spelt: tuple[int, ...], budget: int) -> None:
            if len(found) >= most:
                return
            if i == len(text):
                if spelt not in found and len(spelt) == budget:
                    found.append(spelt)
                return
            for j in range(min(len(text), i + longest), i, -1):  # longer pieces first
                piece = index.get(text[i:j])
                if piece is not None and piece not in silent and len(spelt) + 1 + fewest[j] <= budget:
                    walk(j, spelt + (piece,), budget)

        if fewest[0] <= len(text):
            for budget in (fewest[0], fewest[0] + 1):
                walk(0, (), budget)
        return found

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """Greedy CTC: collapse repeats, drop blanks and special tokens; characters: `|` becomes a
        space; word pieces: joined, each word-start marker a space."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size == 0:
            return ""
        keep = np.ones(ids.size, dtype=bool)
        keep[1:] = ids[1:] != ids[:-1]
        silent = self.silent
        spelt = [self.tokens[int(i)] for i in ids[keep] if int(i) not in silent]
        text = "".join(spelt).replace(self.word_start or DELIMITER, " ")
        return " ".join(text.split())

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
