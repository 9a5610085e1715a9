"""Beam-search decoding time against the model call, per second of audio (issue 17's budget:
decoding at the default width at most 25% of the model call for the embedded model, 5% for
wav2vec2-base size).

Models: the embedded tiffin/tiny-en, and a wav2vec2-base-sized CTC model (base-960h's
architecture, random weights: nothing can be downloaded here; its near-uniform logits are the
beam's worst case, every hypothesis alive). Both exported to ONNX fp32 and run as `tiffin
predict` runs them (tiffin.host, windows, ONNX Runtime), on 10 s of espeak-ng speech. The
decoder: tiffin.ctc_beam over Debian's dictionary words (`grep -E '^[a-z]{2,8}$'
/usr/share/dict/words`, as `make demo`) at beam widths 10 / 50 / 100, with and without a
trigram LM built by `tiffin lm` from 2,000 dictionary sentences. Greedy decoding is timed too.
Median of N warm calls, alternating.

Run: .venv/bin/python benchmarks/decoding.py [--runs 5]
Writes benchmarks/results/decoding.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import alternate, save_results  # noqa: E402
from benchmarks.speech_inference import base_folder, speech  # noqa: E402

WIDTHS = (10, 50, 100)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from tiffin.ctc_beam import BeamDecoder, BeamOptions
    from tiffin.export.exporting import ExportOptions, export_model
    from tiffin.host import open_artifact
    from tiffin.ngram import build

    work = Path(tempfile.mkdtemp())
    wave = speech(work)
    words = [w for w in Path("/usr/share/dict/words").read_text().split() if re.fullmatch(r"[a-z]{2,8}", w)]
    (work / "words.txt").write_text("\n".join(words) + "\n")
    rng = random.Random(0)
    (work / "text.txt").write_text("\n".join(" ".join(rng.choices(words, k=rng.randint(3, 8))) for _ in range(2000)))
    lm = build(work / "text.txt", work / "lm")["lm"]
    models = {"tiffin/tiny-en": "tiffin/tiny-en", "wav2vec2-base size (random weights)": base_folder(work / "base")}
    results = {"cpu": cpu_name(), "audio_s": 10.0, "word_list": len(words), "lm": "3-gram from 2,000 sentences",
               "models": {}}
    for name, source in models.items():
        out = work / name.split()[0].replace("/", "-")
        export_model(ExportOptions(source, "onnx", "fp32", out=out))
        predictor = open_artifact(out)[0]
        logits = predictor.recording_logits(wave)
        timers = {"model call": lambda: predictor.recording_logits(wave),
                  "greedy": lambda: predictor.vocab.decode_logits(logits)}
        decoders = {}
        for width in WIDTHS:
            decoders[f"beam {width}"] = BeamDecoder(predictor.vocab, BeamOptions(words=work / "words.txt",
                                                                                 beam_width=width))
            decoders[f"beam {width} + LM"] = BeamDecoder(predictor.vocab, BeamOptions(
                words=work / "words.txt", lm=Path(lm), beam_width=width))
        for key, decoder in decoders.items():
            timers[key] = (lambda d: lambda: d.decode(logits))(decoder)
        samples = alternate(timers, args.runs)
        model_s = statistics.median(samples["model call"])
        rows = {}
        for key, times in samples.items():
            median = statistics.median(times)
            rows[key] = {"median_ms": round(1000 * median, 2), "ms_per_audio_s": round(100 * median, 2),
                         "fraction_of_model_call": round(median / model_s, 4)}
        results["models"][name] = rows
        print(name, json.dumps(rows, indent=1), flush=True)
    save_results("decoding", results)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
