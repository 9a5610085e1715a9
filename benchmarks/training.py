"""Training throughput: is the model or the data loader the bottleneck?

For each task, on the embedded models (tiffin/tiny-motion at 8 x 64 px, tiffin/tiny-en) and
generated data (synthetic videos, espeak-ng sentences):
  - full training: `tiffin train` for a fixed number of steps, samples/s from the run's own
    train_seconds (which include one short validation pass), at --num-workers 0 and 2;
  - data pipeline alone: the same training dataset and loader settings iterated for the same
    number of batches, nothing else.
If the loader alone is much faster than training, the model is the bottleneck.

Run: .venv/bin/python benchmarks/training.py [--steps 30]
Writes benchmarks/results/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import save_results  # noqa: E402

BATCH = 8


def video_data(work: Path) -> Path:
    from tiffin.train.synthetic import make_motion_dataset

    make_motion_dataset(work / "videos", per_class=24, seed=5, size=(160, 120))
    return work / "videos"


def speech_data(work: Path) -> Path:
    subprocess.run([sys.executable, "-m", "tiffin", "synth", "speech", str(work / "speech"), "--count", "200",
                    "--seed", "0"], check=True, capture_output=True)
    return work / "speech" / "train.csv"


def train_run(task: str, data: Path, workers: int, steps: int, out: Path) -> dict:
    source = ["--train-folder", str(data), "--backbone", "tiffin/tiny-motion", "--no-flip"] if task == "video" else \
             ["--train-csv", str(data), "--backbone", "tiffin/tiny-en"]
    subprocess.run([sys.executable, "-m", "tiffin", "train", task, *source, "--max-steps", str(steps), "--batch-size",
                    str(BATCH), "--num-workers", str(workers), "--no-progress", "--val-split", "0.05", "--out", str(out)],
                   check=True, capture_output=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"samples_per_s": round(steps * BATCH / metrics["train_seconds"], 2), "train_seconds": metrics["train_seconds"]}


def loader_alone(task: str, data: Path, workers: int, steps: int) -> dict:
    """The training loader as `tiffin train` builds it, iterated with nothing else running."""
    from torch.utils.data import DataLoader

    if task == "video":
        from tiffin.train.video_lookup import get_video_backbone
        from tiffin.train.video_data import EpochShuffle, VideoClipDataset, collate_clips, discover_folder, probe_all
        from tiffin.train.video_model import embedded_spec

        spec = embedded_spec(get_video_backbone("tiffin/tiny-motion"))
        videos, _ = probe_all(discover_folder(data), False)
        labels = sorted({v.label for v in videos})
        dataset = VideoClipDataset(videos, labels, spec, train=True, flip=False)
        loader = DataLoader(dataset, batch_size=BATCH, sampler=EpochShuffle(len(dataset)), num_workers=workers,
                            collate_fn=collate_clips)
    else:
        from tiffin.ctc import Vocabulary
        from tiffin.train.speech_data import LengthBucketSampler, SpeechDataset, check_rows, collate_speech, read_table

        utts, _ = check_rows(read_table(data, "speech_files", "targets", "--train-csv"), Vocabulary(), 16000)
        loader = DataLoader(SpeechDataset(utts, 16000), batch_sampler=LengthBucketSampler([u.samples for u in utts], BATCH),
                            num_workers=workers, collate_fn=collate_speech)
    seen, start = 0, time.perf_counter()
    while seen < steps:
        for _ in loader:
            seen += 1
            if seen == steps:
                break
    return {"samples_per_s": round(steps * BATCH / (time.perf_counter() - start), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tiffin-train-bench-"))
    data = {"video": video_data(work), "speech": speech_data(work)}
    results = {"cpu_count": os.cpu_count(), "batch_size": BATCH, "steps": args.steps, "tasks": {}}
    for task in ("video", "speech"):
        rows = {}
        for workers in (0, 2):
            rows[f"train, {workers} workers"] = train_run(task, data[task], workers, args.steps,
                                                           work / f"{task}-run-{workers}")
            rows[f"loader alone, {workers} workers"] = loader_alone(task, data[task], workers, args.steps)
            print(task, workers, rows, flush=True)
        results["tasks"][task] = rows
    print(json.dumps(results, indent=1))
    save_results("training", results)


if __name__ == "__main__":
    main()
