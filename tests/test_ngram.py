"""tiffin.ngram and `tiffin lm`: ARPA models that are proper distributions, load in KenLM, and steer decoding."""

from __future__ import annotations

import math

import pytest

from tests.helpers import VOCAB, frames, spell, tiffin
from tiffin.ctc_beam import BeamDecoder, BeamOptions
from tiffin.errors import TiffinError
from tiffin.ngram import build, build_arpa, sentences

TEXT = "the cat sat\nthe cat ran\na dog sat on the mat\nthe dog ran\n"


def read_arpa(text: str) -> dict[int, dict[tuple[str, ...], tuple[float, float]]]:
    tables: dict[int, dict] = {}
    order = 0
    for line in text.splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            order = int(line[1])
            tables[order] = {}
        elif order and line.strip() and not line.startswith("\\"):
            parts = line.split("\t")
            tables[order][tuple(parts[1].split())] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else 0.0)
    return tables


def prob(tables, gram: tuple[str, ...]) -> float:
    """P(w | h) as a backoff LM (KenLM) reads the tables, in probability."""
    if gram in tables[len(gram)]:
        return 10 ** tables[len(gram)][gram][0]
    if len(gram) == 1:
        return 10 ** tables[1][("<unk>",)][0]
    weight = tables[len(gram) - 1].get(gram[:-1], (0.0, 0.0))[1]
    return 10 ** weight * prob(tables, gram[1:])


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_history_sums_to_one(tmp_path, order):
    (tmp_path / "t.txt").write_text(TEXT)
    tables = read_arpa(build_arpa(sentences(tmp_path / "t.txt"), order))
    outcomes = [g[0] for g in tables[1] if g != ("<s>",)]
    assert {"THE", "CAT", "</s>", "<unk>"} <= set(outcomes)
    for history in [(), ("<s>",), ("THE",), ("<s>", "THE"), ("THE", "CAT"), ("MAT",), ("ON", "THE")][: 1 + 6 * (order > 1)]:
        history = history[-(order - 1):] if order > 1 else ()
        total = sum(prob(tables, history + (w,)) for w in outcomes)
        assert math.isclose(total, 1.0, rel_tol=1e-4), (history, total)
    if order > 1:  # seen continuations are likelier than the same words unseen
        assert prob(tables, ("THE", "CAT")) > prob(tables, ("THE", "SAT"))


def test_tiffin_lm_writes_a_model_kenlm_loads_and_that_steers_the_beam(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT + "the cap\n")
    result = tiffin("lm", tmp_path / "t.txt", "--out", tmp_path / "lm")
    assert result.exit_code == 0, result.output
    assert "--words" in result.output and (tmp_path / "lm" / "lm.arpa").is_file()
    words = (tmp_path / "lm" / "words.txt").read_text().split()
    assert words[0] == "THE" and {"CAT", "CAP", "SAT"} <= set(words)
    # acoustics lean to CAP; the built LM knows "the cat sat", never "cap sat"
    logits = frames(spell("THE", "CAT", "SAT", ambiguous={6: {"T": 4.0, "P": 4.4}}))
    plain = BeamDecoder(VOCAB, BeamOptions(words=tmp_path / "lm" / "words.txt"))
    assert plain.decode(logits) == "THE CAP SAT"
    with_lm = BeamDecoder(VOCAB, BeamOptions(words=tmp_path / "lm" / "words.txt", lm=tmp_path / "lm" / "lm.arpa"))
    assert with_lm.decode(logits) == "THE CAT SAT"


def test_an_lm_in_another_case_and_bad_text_are_one_line_errors(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    build(tmp_path / "t.txt", tmp_path / "lower", case="lower")
    with pytest.raises(TiffinError, match="none of the word list's words is in the LM"):
        BeamDecoder(VOCAB, BeamOptions(words=tmp_path / "lower" / "words.txt", lm=tmp_path / "lower" / "lm.arpa"))
    (tmp_path / "empty.txt").write_text("123 ...\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    for args, words in [((tmp_path / "missing.txt",), "no such file"), ((tmp_path / "empty.txt",), "holds no words"),
                        ((tmp_path / "latin1.txt",), "not UTF-8"), ((tmp_path / "t.txt", "--case", "title"), "--case")]:
        result = tiffin("lm", *args, "--out", tmp_path / "o")
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output
