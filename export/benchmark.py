"""`tiffin benchmark`: every export format x precision of a model, timed against PyTorch eager.

For each target it exports (gated by parity as `tiffin export` is), loads the artifact the way
prediction does, and times warm calls at each batch size; the eager fp32 model at the same
batch is the baseline of every speed-up. With `--data` it also scores each variant on real
files (`tiffin evaluate`'s accuracy or CER). Achieved GFLOP/s are compared with this machine's
measured matmul peak, so a reader sees how much headroom is left (Ultralytics' benchmark mode,
plus parity and a roofline).
"""

from __future__ import annotations

import functools
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tiffin.cpu import precision_warning
from tiffin.export.formats import FORMATS, PRECISIONS
from tiffin.errors import TiffinError
from tiffin.tasks import TASKS

# What is tried by default: every format's precisions, plus eager bf16 autocast as a PyTorch row.
DEFAULT_TARGETS = [("pytorch", "fp32"), ("pytorch", "bf16")] + [(f.name, p) for f in FORMATS.values() for p in f.precisions]
SPEECH_SECONDS = 10.0  # the length of the benchmark recordings


@dataclass
class BenchOptions:
    model: Path
    targets: list[tuple[str, str]] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    batches: list[int] = field(default_factory=lambda: [1, 8])
    data: Path | None = None
    runs: int = 10
    warmup: int = 2
    # MODEL is an artifact its user trusts explicitly (--trust): a program artifact opens unsigned;
    # the benchmark's own exports are signed by this run and need no such word
    trust: bool = False


def parse_targets(formats: str, precisions: str) -> list[tuple[str, str]]:
    """The (format, precision) pairs named by `--formats a,b` and `--precisions x,y` that exist."""
    known = {"pytorch": ("fp32", "bf16"), **{f.name: f.precisions for f in FORMATS.values()}}
    names = [f.strip() for f in formats.split(",") if f.strip()]
    wanted = [p.strip() for p in precisions.split(",") if p.strip()]
    for name in names:
        if name not in known:
            raise TiffinError(f"--formats {name}: choose from {', '.join(known)}")
    for p in wanted:
        if p not in PRECISIONS:
            raise TiffinError(f"--precisions {p}: choose from {', '.join(PRECISIONS)}")
    targets = [(n, p) for n in (["pytorch"] + [n for n in names if n != "pytorch"]) for p in known[n] if p in wanted]
    if ("pytorch", "fp32") not in targets:
        targets.insert(0, ("pytorch", "fp32"))  # the baseline of every speed-up
    return targets


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise TiffinError(f"--batch {text}: give positive batch sizes, e.g. 1,8")
    return batches


def inputs_for(task: str, loaded, batch: int) -> tuple[torch.Tensor, ...]:
    """A benchmark batch of the task (its row's `benchmark_inputs`), seeded by the batch size."""
    return TASKS[task].part("benchmark_inputs")(loaded.spec, batch, torch.Generator().manual_seed(batch))


def video_inputs(spec, batch: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random uint8 clips at the model's size."""
    shape = (batch, spec.num_frames, spec.crop_size, spec.crop_size, 3)
    return (torch.randint(0, 256, shape, dtype=torch.uint8, generator=g),)


def speech_inputs(spec, batch: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """10 s recordings of noise at the model's rate."""
    samples = int(SPEECH_SECONDS * spec.sample_rate)
    return 0.1 * torch.randn(batch, samples, generator=g), torch.full((batch,), samples, dtype=torch.int64)


def time_calls(run: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


@functools.cache
def matmul_peak_gflops(dtype: torch.dtype) -> float:
    """This machine's measured matmul throughput (best of 5 square 2048 products), GFLOP/s."""
    n = 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / min(time_calls(lambda: a @ b, 5, 1)) / 1e9


def model_gflop(net, inputs: tuple[torch.Tensor, ...]) -> float:
    """FLOPs of one eager forward pass over `inputs` (matmuls and convolutions), in GFLOP."""
    from torch.nn.utils import parametrize
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # weight-norm parametrizations (wav2vec2's positional conv) fail under the counter: compute
    # their weights once outside it and count the cached pass
    with torch.inference_mode(), parametrize.cached():
        net(*inputs)
        with counter:
            net(*inputs)
    return counter.get_total_flops() / 1e9


def _eager(net, precision: str) -> Callable:
    def run(*inputs: torch.Tensor):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return net(*inputs)

    return run


def _artifact(predictor) -> tuple[Callable, Any]:
    """(timed call, predictor to score with) over one opened artifact session: the session the
    benchmark times is the one it scores, so each artifact is opened once."""
    session = predictor.session

    def run(*inputs: torch.Tensor):
        return session(*(x.numpy() for x in inputs))

    return run, predictor


def benchmark(opts: BenchOptions, progress: Callable[[int, int, str], None] = lambda done, total, step: None
              ) -> list[dict[str, Any]]:
    """Rows of (format, runtime, precision, batch): status (ok, parity failed, export failed, runtime
    failed, skipped) and
    why, size, latency, throughput, speed-up, GFLOP/s, share of peak, parity and the task metric
    on `opts.data`. An export refused by the parity gate leaves no artifact, so it is not timed."""
    from tiffin.export.exporting import ExportOptions, export_model
    from tiffin.export.recheck import check_artifact
    from tiffin.export.parity import CheckTooSlow, ParityError
    from tiffin.host import open_artifact
    from tiffin.runtimes import runtimes_for
    from tiffin.train.predict import load_model

    given_artifact = None
    if Path(opts.model).is_dir() and (Path(opts.model) / "tiffin.json").is_file():
        # an artifact: time it as it is, against the PyTorch model it was exported from
        from tiffin.artifact_json import read_artifact
        from tiffin.export.source_model import source_model

        given_artifact, artifact_meta = Path(opts.model), read_artifact(Path(opts.model))
        source = source_model(given_artifact, artifact_meta,
                              hint="benchmark the checkpoint it came from instead")
        opts = replace(opts, model=source,
                       targets=[("pytorch", "fp32"), (artifact_meta["format"], artifact_meta["precision"])])
    loaded = load_model(opts.model)  # once: the baseline, every export's source and the parity reference
    task = loaded.task
    flops = {b: model_gflop(loaded.net, inputs_for(task, loaded, b)) for b in opts.batches}
    peaks = {"fp32": matmul_peak_gflops(torch.float32)}
    if any(p in ("bf16", "fp16") for _, p in opts.targets) and precision_warning("bf16") is None:
        # only where bf16 has instructions: emulated, the 2048 bf16 products took 6 minutes on an AMD EPYC
        peaks["bf16"] = matmul_peak_gflops(torch.bfloat16)
    baseline: dict[int, float] = {}
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="tiffin-bench-"))
    try:
        for fmt, precision in opts.targets:
            progress(len(rows) // len(opts.batches), len(opts.targets), f"{fmt} {precision}")
            row: dict[str, Any] = {"format": fmt, "runtime": "pytorch" if fmt == "pytorch" else None,
                                   "precision": precision, "status": "ok", "note": "", "size_mb": None, "parity": None}
            runner, scored = None, None  # what is timed (torch tensors in), what is scored on --data
            folder = None  # the artifact of this row, which every runtime of its format then runs
            if fmt == "pytorch":
                runner, scored = _eager(loaded.net, precision), loaded.predictor()
            elif precision == "int8" and TASKS[task].static_int8 and opts.data is None:
                row["status"], row["note"] = "skipped", "static int8 calibrates on real videos: give --data"
            elif given_artifact is not None:
                row["parity"], folder = artifact_meta["parity"], given_artifact
            else:
                out = work / f"{fmt}-{precision}"
                try:
                    _, exported = export_model(ExportOptions(Path(opts.model), fmt, precision, out=out,
                                                             calibration_data=opts.data if precision == "int8" else None),
                                               loaded=loaded)
                    row["parity"], folder = exported["parity"], out
                except ParityError as err:  # a check past its time budget is a row saying so, not a wait
                    row["status"], row["note"] = "check too slow" if isinstance(err, CheckTooSlow) else "parity failed", str(err)
                except Exception as err:  # noqa: BLE001  a format that cannot take this model is a row, not the end
                    row["status"], row["note"] = "export failed", (str(err).splitlines() or [type(err).__name__])[0]
            if folder is None:
                rows += _timed(row, runner, scored, opts, loaded, flops, peaks, baseline)
                continue
            row["size_mb"] = round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 2)
            for i, runtime in enumerate(runtimes_for(fmt)):
                # the export's own runtime passed the gate in export_model; every other one is gated here
                run_row = dict(row, runtime=runtime.name)
                runner = scored = None
                if not runtime.installed:
                    run_row["status"], run_row["note"] = "skipped", f"not installed: pip install '{runtime.install}'"
                elif reason := runtime.needs():  # e.g. OpenVINO's bf16 hint on a CPU without bf16
                    run_row["status"], run_row["note"] = "skipped", reason
                else:
                    try:
                        trust = opts.trust and given_artifact is not None
                        if i or given_artifact is not None:
                            run_row["parity"] = check_artifact(folder, loaded=loaded, runtime=runtime.name,
                                                               trust=trust)
                        runner, scored = _artifact(open_artifact(folder, runtime=runtime.name, trust=trust)[0])
                    except ParityError as err:
                        run_row["status"], run_row["note"] = "parity failed", str(err)
                    except Exception as err:  # noqa: BLE001  a runtime that cannot compile this graph is a row
                        run_row["status"] = "runtime failed"
                        run_row["note"] = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
                rows += _timed(run_row, runner, scored, opts, loaded, flops, peaks, baseline)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        row["machine_peak_gflops"] = {k: round(v, 1) for k, v in peaks.items()}
    return rows


def _timed(row: dict[str, Any], runner: Callable | None, scored, opts: BenchOptions, loaded, flops: dict[int, float],
           peaks: dict[str, float], baseline: dict[int, float]) -> list[dict[str, Any]]:
    """One row per batch size: `row` with its timings (none when `runner` is None) and its metric
    on `opts.data`; eager fp32's medians become the `baseline` of every speed-up."""
    from tiffin.train.evaluate import evaluate

    if runner is not None and opts.data is not None:
        row["metric"] = {k: v for k, v in evaluate(scored, opts.data).items() if k in ("accuracy", "cer", "wer")}
    rows = []
    for batch in opts.batches:
        timed = dict(row, batch=batch)
        if runner is not None:
            inputs = inputs_for(loaded.task, loaded, batch)
            times = time_calls(lambda: runner(*inputs), opts.runs, opts.warmup)
            median = statistics.median(times)
            if (row["format"], row["precision"]) == ("pytorch", "fp32"):
                baseline[batch] = median
            # a half-precision row's ceiling is the faster of the two peaks: without bf16 instructions,
            # bf16 is converted and computed in fp32 units (and its own peak is not measured)
            half = row["precision"] in ("bf16", "fp16")
            peak = max(peaks.get("bf16", 0.0), peaks["fp32"]) if half else peaks["fp32"]
            timed.update(latency_ms=round(1000 * median, 2), p90_ms=round(1000 * float(np.percentile(times, 90)), 2),
                         items_per_s=round(batch / median, 2),
                         speedup=round(baseline[batch] / median, 3) if batch in baseline else None,
                         gflops_per_s=float(f"{flops[batch] / median:.3g}"),
                         peak_fraction=float(f"{flops[batch] / median / peak:.3g}"))
        rows.append(timed)
    return rows


def record_fastest(artifact: Path, rows: list[dict[str, Any]]) -> str:
    """Write the fastest runtime at batch 1 (else the smallest batch) that passed parity into
    `artifact`'s tiffin.json (through its one writer, tiffin.artifact_json.write_meta), and
    return its name.

    Raises:
        TiffinError: no runtime of the artifact's format ran it.
    """
    from tiffin.artifact_json import read_artifact, write_meta

    timed = [r for r in rows if r["format"] != "pytorch" and r["status"] == "ok" and r.get("latency_ms")]
    if not timed:
        raise TiffinError(f"{artifact}: no runtime ran it within parity; nothing to record")
    smallest = min(r["batch"] for r in timed)
    best = min((r for r in timed if r["batch"] == smallest), key=lambda r: r["latency_ms"])
    from tiffin.signing import SignatureError, sign_artifact, verify_artifact

    try:  # a signature that held before this edit is renewed after it, with the user's key
        signed = bool(verify_artifact(artifact))
    except SignatureError:
        signed = False
    write_meta(artifact, {**read_artifact(artifact, check_model_file=False), "runtime": best["runtime"]})
    if signed:
        sign_artifact(artifact)
    return best["runtime"]


def variant(row: dict[str, Any]) -> str:
    """A row's name: format and precision, and its runtime where the format has more than one."""
    from tiffin.runtimes import runtimes_for

    several = len(runtimes_for(row["format"])) > 1
    return f"{row['format']} {row['precision']}" + (f" ({row['runtime']})" if several and row.get("runtime") else "")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Bar chart of the speed-up over eager fp32 per variant, one group per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r.get("speedup")]
    variants = list(dict.fromkeys(variant(r) for r in timed))
    batches = sorted({r["batch"] for r in timed})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(variants)), 4))
    width = 0.8 / max(1, len(batches))
    for i, batch in enumerate(batches):
        values = {variant(r): r["speedup"] for r in timed if r["batch"] == batch}
        ax.bar([x + i * width for x in range(len(variants))], [values.get(v, 0) for v in variants], width,
               label=f"batch {batch}")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks([x + width * (len(batches) - 1) / 2 for x in range(len(variants))], variants, rotation=30, ha="right")
    ax.set_ylabel("speed-up over PyTorch eager fp32")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
