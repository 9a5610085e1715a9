"""Measurement scripts (run each as `python benchmarks/NAME.py`); the helpers they share."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).parent / "results"


def alternate(timers: dict[str, Callable[[], Any]], runs: int, block: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each timer, `runs` rounds after one warm-up call each. Every timer runs
    `block` times in a row per round, so drift in the machine's speed hits all of them alike;
    blocks > 1 for calls short enough that the last timer's thread pool, still spinning, would
    slow the next one."""
    for run in timers.values():
        run()
    samples: dict[str, list[float]] = {key: [] for key in timers}
    for _ in range(runs):
        for key, run in timers.items():
            for _ in range(block):
                start = time.perf_counter()
                run()
                samples[key].append(time.perf_counter() - start)
    return samples


def tiffin(*args: object) -> str:
    """A `tiffin` command in a child process (as a user runs it); its stdout, or the script stops
    with the command's output."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tiffin", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"tiffin {' '.join(map(str, args))} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done.stdout


def save_results(name: str, results: dict) -> Path:
    """Write a script's figures to benchmarks/results/NAME.json (what BENCHMARKS.md quotes)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    return path
