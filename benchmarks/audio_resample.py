"""Audio input: tiffin's numpy resampler vs torchaudio.functional.resample (the peer a torch
user calls; same windowed-sinc kernel, so the outputs agree to float error), to 16 kHz from the
rates recordings come in, 4 s and 60 s of audio. Timed in blocks (30 calls of one, then 30 of
the other, 3 rounds), not call by call: interleaved, each library's thread pool still spinning
from its last call slowed the other by up to 6x.

Run: .venv/bin/python benchmarks/audio_resample.py [--runs 30]
Writes benchmarks/results/audio_resample.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import alternate, save_results  # noqa: E402


def main() -> None:
    import numpy as np
    import torch
    import torchaudio.functional as F

    from tiffin.audio_io import resample

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for seconds in (4, 60):
        for rate in (8000, 22050, 44100, 48000):
            wave = np.random.default_rng(0).standard_normal(rate * seconds).astype(np.float32) * 0.1
            tensor = torch.from_numpy(wave)
            ours, peer = resample(wave, rate, 16000), F.resample(tensor, rate, 16000).numpy()
            samples = alternate({"tiffin": lambda: resample(wave, rate, 16000),
                                 "torchaudio": lambda: F.resample(tensor, rate, 16000)}, 3, block=args.runs)
            ms = {k: 1000 * statistics.median(v) for k, v in samples.items()}
            rows.append({"seconds": seconds, "rate": rate, "tiffin_ms": round(ms["tiffin"], 2),
                         "torchaudio_ms": round(ms["torchaudio"], 2), "speedup": round(ms["torchaudio"] / ms["tiffin"], 2),
                         "max_abs_diff": float(np.abs(ours - peer).max())})
            print(rows[-1], flush=True)
    save_results("audio_resample", {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                    "runs": args.runs, "rows": rows})


if __name__ == "__main__":
    main()
