"""Long recordings: peak RSS and real-time factor against length, before and after streaming.

"before" is tiffin's path until streaming (still in tiffin.host.SpeechPredictor for decoder
tuning): the whole recording decoded and resampled into memory, its windows run 8 per model call
(`tiffin predict`'s default then), every window's logits kept, stitched, decoded. "after" is
`SpeechPredictor.predict_file` (tiffin.speech_stream: blocks in, one window per call, frames
decoded as they are stitched, silent windows skipped). Each measurement is its own process (peak
RSS from the kernel's rusage of that child; the model loaded alone is measured too), on the
embedded English model's ONNX artifact, with two kinds of recording written by tests/long_media.py:
"speech" (a sentence every 4 s, as a talk) and "mostly silence" (a sentence every 90 s). Files are
Opus at 48 kHz (a podcast or a call recording as users have them).

Run: .venv/bin/python benchmarks/long_speech.py [--lengths 10,600,3600]
Writes benchmarks/results/long_speech.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import save_results, tiffin  # noqa: E402

CHILD = r"""
import json, os, resource, sys, time
from tiffin.host import open_artifact
artifact, path, way = sys.argv[1:4]
predictor = open_artifact(artifact)[0]
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
if way == "before":
    from tiffin.audio_io import load_audio
    text = predictor.decode(predictor.recording_logits(load_audio(path, predictor.spec.sample_rate)))
elif way == "after":
    text = predictor.predict_file(path)["text"]
else:
    text = ""
took = time.perf_counter() - start
print(json.dumps({"seconds": took, "loaded_mb": loaded, "text": text}))
"""


def measure(artifact: Path, path: Path, way: str) -> dict:
    """One child process: its wall time for the recording and its peak RSS (this process runs only
    that child, so RUSAGE_CHILDREN's peak is the child's)."""
    import resource

    env = {**os.environ, "TIFFIN_MAX_AUDIO_SECONDS": "100000"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(artifact), str(path), way], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{way} {path.name} failed:\n{done.stderr[-3000:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return {**got, "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="10,600,3600", help="Recording lengths in seconds.")
    parser.add_argument("--one", nargs=3, metavar=("ARTIFACT", "FILE", "WAY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one measurement in a process of its own, so RUSAGE_CHILDREN is that child's alone
        print(json.dumps(measure(Path(args.one[0]), Path(args.one[1]), args.one[2])))
        return
    from tests.long_media import spoken, write_long

    lengths = [float(x) for x in args.lengths.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        artifact = tmp / "tiny-en"
        tiffin("export", "tiffin/tiny-en", "--out", artifact)
        sentences = spoken(16000)
        for kind, every in (("speech", 4.0), ("mostly silence", 90.0)):
            for seconds in lengths:
                path = tmp / f"{kind.replace(' ', '-')}-{int(seconds)}.opus"
                write_long(path, seconds, every=every, rate=48000, sentences=sentences)
                got = {}
                for way in ("model only", "before", "after"):
                    done = subprocess.run([sys.executable, __file__, "--one", str(artifact), str(path), way],
                                          capture_output=True, text=True)
                    if done.returncode:
                        raise SystemExit(done.stderr[-3000:])
                    got[way] = json.loads(done.stdout.strip().splitlines()[-1])
                model = got["model only"]["peak_mb"]
                row = {"kind": kind, "seconds": seconds, "file_mb": round(path.stat().st_size / 2**20, 2),
                       "model_only_peak_mb": round(model),
                       **{f"{way}_{key}": value for way in ("before", "after") for key, value in (
                           ("peak_mb", round(got[way]["peak_mb"])),
                           ("above_model_mb", round(got[way]["peak_mb"] - model)),
                           ("rtf", round(got[way]["seconds"] / seconds, 4)))},
                       "same_text": got["before"]["text"] == got["after"]["text"]}
                rows.append(row)
                print(json.dumps(row))
    save_results("long_speech", {"cpu": cpu_name(), "cores": os.cpu_count(), "rows": rows})


if __name__ == "__main__":
    main()
