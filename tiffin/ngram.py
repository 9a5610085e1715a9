"""Word lists and n-gram language models from a text file, for beam-search decoding (`tiffin lm`).

KenLM's builder (`lmplz`) is not on PyPI (the `kenlm` package there only queries models), so
tiffin writes ARPA models itself: interpolated absolute discounting (Ney's discount per order,
D = n1 / (n1 + 2 n2)), which the ARPA backoff format represents exactly: a seen n-gram stores
its interpolated probability, a history h its backoff weight D * N1+(h .) / c(h). Every
history's distribution sums to one, with `<unk>` taking the unigram mass the discount frees.
Torch-free; the output loads in KenLM (and so in tiffin.ctc_beam).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from pathlib import Path

from tiffin.errors import TiffinError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # letters, with inner apostrophes (don't, o'clock)


def sentences(path: str | Path, option: str = "TEXT", case: str = "upper") -> list[list[str]]:
    """The words of each non-empty line of a UTF-8 text file, in `case` ("upper": how
    wav2vec2-base-960h and tiny-en spell, "lower": a vocabulary learnt with from-data); KenLM
    matches words by their exact spelling, so the model's case is the LM's.

    Raises:
        TiffinError: missing, not UTF-8, or no words.
    """
    from tiffin.text_file import read_lines

    if case not in ("upper", "lower"):
        raise TiffinError(f"--case {case}: choose upper or lower")
    lines = [WORD.findall(line.upper() if case == "upper" else line.lower())
             for line in read_lines(path, option, "one sentence a line")]
    lines = [words for words in lines if words]
    if not lines:
        raise TiffinError(f"{option} {path}: holds no words")
    return lines


def _discount(counts: Counter) -> float:
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    return min(0.9, max(0.1, n1 / (n1 + 2 * n2))) if n1 + n2 else 0.5


def build_arpa(lines: list[list[str]], order: int = 3) -> str:
    """An ARPA model of `order` over the sentences (each wrapped in <s> ... </s>)."""
    if not 1 <= order <= 6:
        raise TiffinError(f"--order {order}: give 1 to 6")
    counts: list[Counter] = [Counter() for _ in range(order + 1)]  # counts[n][tuple of n words]
    for words in lines:
        padded = [BOS] + words + [EOS]
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                gram = tuple(padded[i : i + n])
                if n == 1 and gram == (BOS,):
                    continue  # <s> is never predicted
                counts[n][gram] += 1
    probs: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    backoff: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]

    # unigrams: discounted counts, the freed mass spread over the vocabulary and <unk>
    total, d = sum(counts[1].values()), _discount(counts[1])
    freed = d * len(counts[1]) / total
    share = freed / (len(counts[1]) + 1)
    probs[1] = {g: (c - d) / total + share for g, c in counts[1].items()}
    probs[1][(UNK,)] = share

    def lower(gram: tuple[str, ...]) -> float:
        """P(w | h) for any gram from the orders below its own (backing off as ARPA does)."""
        n = len(gram)
        if n == 1:
            return probs[1].get(gram, probs[1][(UNK,)])
        if gram in probs[n]:
            return probs[n][gram]
        return backoff[n - 1].get(gram[:-1], 1.0) * lower(gram[1:])

    for n in range(2, order + 1):
        d = _discount(counts[n])
        history_total: Counter = Counter()
        followers: dict[tuple[str, ...], int] = defaultdict(int)
        for gram, c in counts[n].items():
            history_total[gram[:-1]] += c
            followers[gram[:-1]] += 1
        for h, c_h in history_total.items():
            backoff[n - 1][h] = d * followers[h] / c_h
        for gram, c in counts[n].items():
            h = gram[:-1]
            probs[n][gram] = (c - d) / history_total[h] + backoff[n - 1][h] * lower(gram[1:])

    entries = {1: [(BOS,)] + sorted(probs[1])}
    for n in range(2, order + 1):
        entries[n] = sorted(probs[n])
    out = ["", "\\data\\"] + [f"ngram {n}={len(entries[n])}" for n in range(1, order + 1)] + [""]
    for n in range(1, order + 1):
        out.append(f"\\{n}-grams:")
        for gram in entries[n]:
            p = -99.0 if gram == (BOS,) else math.log10(probs[n][gram])
            line = f"{p:.6f}\t{' '.join(gram)}"
            if n < order:
                line += f"\t{math.log10(backoff[n].get(gram, 1.0)):.6f}"
            out.append(line)
        out.append("")
    out.append("\\end\\")
    return "\n".join(out) + "\n"


def word_list(lines: list[list[str]], min_count: int = 1) -> list[str]:
    """The words seen at least `min_count` times, most frequent first."""
    counts = Counter(w for words in lines for w in words)
    return [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]


def build(text: str | Path, out: str | Path, order: int = 3, min_count: int = 1, case: str = "upper"
          ) -> dict[str, object]:
    """OUT/words.txt and OUT/lm.arpa from a text file; what was written, with counts.

    Example:
        >>> build("corpus.txt", "lm")   # then: tiffin export MODEL --words lm/words.txt --lm lm/lm.arpa
    """
    lines = sentences(text, case=case)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    words = word_list(lines, min_count)
    (out / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    (out / "lm.arpa").write_text(build_arpa(lines, order), encoding="utf-8")
    return {"words": str(out / "words.txt"), "lm": str(out / "lm.arpa"), "sentences": len(lines),
            "vocabulary": len(words), "order": order}
