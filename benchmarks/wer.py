"""WER and CER of beam-search decoding with a word list and with an n-gram LM from held-out text
(issue 17: greedy vs beam + word list vs beam + LM, zero-shot and after the demo's fine-tune).

Two test sets, both spoken by espeak-ng's held-out Scottish voices as `make demo` speaks them:
  - "dictionary": `make demo`'s 40 unseen sentences (seed 99), words drawn at random from the
    35,689 dictionary words; the held-out text is 2,000 other such draws (seed 7). Random draws
    have no word order an n-gram could learn: this is the LM's null case.
  - "natural": 40 English sentences (4-12 words, no digits) from Debian's `fortunes` quotations
    (apt-get install fortunes), the held-out text the other ~13,200 sentences, none of them
    spoken. The word list is the held-out text's words (OOV test words cannot be recognised, as
    with a user's own LM).
The model: `tiffin/tiny-en`, and the demo's fine-tune of it (300 dictionary sentences in the same
voices, 6 epochs, lr 5e-4). Decoding through tiffin.train.evaluate (what `tiffin evaluate
--decoder beam` runs). The LM weight and word score are chosen on a dev set of 40 other
sentences of the same kind (never on the test set), over a small grid; the defaults
(lm_weight 2, word_score 0) are reported too.

Run: .venv/bin/python benchmarks/wer.py   (needs espeak-ng, wamerican, fortunes; about 10 min on 2 cores)
Writes benchmarks/results/wer.json.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import save_results, tiffin  # noqa: E402

from tiffin.cpu import cpu_features  # noqa: E402

SCOTTISH = "en-gb-scotland,en-gb-scotland+m3,en-gb-scotland+f2,en-gb-scotland+m7,en-gb-scotland+f4"
FORTUNES = Path("/usr/share/games/fortunes")
DICTIONARY = Path("/usr/share/dict/words")


def fortune_sentences() -> list[str]:
    """Sentences of 4-12 words from the fortune files, one a line, without digits or symbols."""
    if not FORTUNES.is_dir():
        raise SystemExit(f"{FORTUNES}: missing; apt-get install fortunes")
    found = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or path.is_symlink() or path.name in ("art", "ascii-art"):
            continue  # .dat indexes, .u8 links, drawings
        for fortune in re.split(r"^%\s*$", path.read_text(encoding="latin-1"), flags=re.M):
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(fortune.split())):
                words = re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", sentence)
                rest = re.sub(r"[A-Za-z]+(?:'[A-Za-z]+)*", "", sentence)
                if 4 <= len(words) <= 12 and not re.search(r"[^\s.,;:!?\"'()\-]", rest):
                    found.append(" ".join(words).lower())
    return list(dict.fromkeys(found))


def main() -> None:
    from tiffin.ctc_beam import BeamOptions
    from tiffin.ngram import build
    from tiffin.train.evaluate import TUNE_GRID, evaluate, tune_decoder
    from tiffin.api import open_predictor

    work = Path(tempfile.mkdtemp(prefix="tiffin-wer-"))
    started = time.perf_counter()
    dictionary = sorted({w for w in DICTIONARY.read_text().split() if re.fullmatch(r"[a-z]{2,8}", w)})
    (work / "dictionary.txt").write_text("\n".join(dictionary) + "\n")
    rng = random.Random(7)
    draws = [" ".join(rng.choices(dictionary, k=rng.randint(3, 6))) for _ in range(2000)]
    (work / "dictionary-text.txt").write_text("\n".join(draws) + "\n")
    natural = fortune_sentences()
    random.Random(0).shuffle(natural)
    (work / "natural-test.txt").write_text("\n".join(natural[:40]) + "\n")
    (work / "natural-dev.txt").write_text("\n".join(natural[40:80]) + "\n")
    (work / "natural-text.txt").write_text("\n".join(natural[80:]) + "\n")

    def synth(name: str, count: int, seed: int, *source: object) -> Path:
        tiffin("synth", "speech", work / name, "--count", count, "--seed", seed, "--voices", SCOTTISH, *source)
        return work / name / "train.csv"

    sets = {
        "dictionary": {"test": synth("dict-test", 40, 99, "--word-list", DICTIONARY),
                       "dev": synth("dict-dev", 40, 98, "--word-list", DICTIONARY),
                       "text": work / "dictionary-text.txt", "words": work / "dictionary.txt"},
        "natural": {"test": synth("nat-test", 40, 0, "--text", work / "natural-test.txt"),
                    "dev": synth("nat-dev", 40, 0, "--text", work / "natural-dev.txt"),
                    "text": work / "natural-text.txt"},
    }
    for name, s in sets.items():
        made = build(s["text"], work / f"lm-{name}")  # tiffin lm TEXT --out DIR
        s["lm"] = Path(made["lm"])
        s.setdefault("words", Path(made["words"]))
        s["lm_sentences"], s["lm_vocabulary"] = made["sentences"], made["vocabulary"]
    train = synth("train", 300, 0, "--word-list", DICTIONARY)
    tiffin("train", "speech", "--train-csv", train, "--backbone", "tiffin/tiny-en", "--learning-rate", "5e-4",
           "--batch-size", "8", "--max-epochs", "6", "--seed", "0", "--out", work / "run")
    models = {"tiffin/tiny-en zero-shot": "tiffin/tiny-en",
              "fine-tuned (as make demo)": work / "run" / "checkpoints" / "best.ckpt"}

    results: dict = {"cpu": cpu_features(), "grid": TUNE_GRID, "sets": {}, "rows": {}}
    for name, s in sets.items():
        results["sets"][name] = {"lm_sentences": s["lm_sentences"], "lm_vocabulary": s["lm_vocabulary"],
                                 "word_list": sum(1 for _ in open(s["words"]))}
    for model_name, source in models.items():
        predictor = open_predictor(source)
        for name, s in sets.items():
            def score(data: Path, **options) -> dict:
                beam = BeamOptions(**options) if options else None
                got = evaluate(predictor, data, beam=beam)
                return {"wer": got["wer"], "cer": got["cer"]}

            def tuned(**files) -> dict:
                """The settings `tiffin evaluate DEV --tune` chooses, then their test score."""
                got = tune_decoder(predictor, s["dev"], BeamOptions(**files))
                best = got["tuned"] if "lm" in files else {"word_score": got["tuned"]["word_score"]}
                return {**score(s["test"], **files, **best), "chosen_on_dev": best, "dev_wer": got["wer"]}

            rows = {"greedy": score(s["test"]),
                    "beam + word list": score(s["test"], words=s["words"]),
                    "beam + word list, tuned on dev": tuned(words=s["words"]),
                    "beam + word list + LM": score(s["test"], words=s["words"], lm=s["lm"]),
                    "beam + word list + LM, tuned on dev": tuned(words=s["words"], lm=s["lm"])}
            results["rows"][f"{model_name} / {name}"] = rows
            print(model_name, name, json.dumps(rows), flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    save_results("wer", results)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
