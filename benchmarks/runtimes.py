"""Runtimes side by side on this CPU: the same ONNX fp32 artifact on every installed runtime of
tiffin.runtimes (ONNX Runtime, OpenVINO), against PyTorchVideo eager fp32.

For each backbone (slowfast_r50 and x3d_s by default, randomly initialised: no weights can be
downloaded here) the network is exported once to ONNX fp32 through tiffin's exporter, each
runtime opens that file with all cores, passes the parity gate (fp32 tolerances, top-1
agreement) on its own outputs, and is timed at batch 1, calls alternating between variants so
drift in the machine's speed hits all alike. The CPU's model and instruction sets are recorded
with the figures: which runtime wins depends on them.

Run: .venv/bin/python benchmarks/runtimes.py [--backbones slowfast_r50,x3d_s] [--runs 7]
Writes benchmarks/results/runtimes.json (or OUT.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import alternate, save_results  # noqa: E402
from benchmarks.video_inference import kinetics_net  # noqa: E402

from tiffin.cpu import cpu_features  # noqa: E402
from tiffin.export.formats import FORMATS  # noqa: E402
from tiffin.export.parity import ParityError, TopOneAgreement, check_parity  # noqa: E402
from tiffin.export.specs import TOLERANCES  # noqa: E402
from tiffin.runtimes import runtimes_for  # noqa: E402


def bench_backbone(name: str, runs: int, threads: int) -> dict:
    info, net, export_spec, clip, peer = kinetics_net(name)  # PyTorchVideo's module is the peer
    path = Path(tempfile.mkdtemp()) / "model.onnx"
    started = time.perf_counter()
    FORMATS["onnx"].export(net, export_spec, path, "fp32", None, {})
    result = {"backbone": name, "input": f"{info.frames}x{info.crop}x{info.crop}",
              "export_s": round(time.perf_counter() - started, 1), "runtimes": {}}
    timers = {"pytorchvideo eager fp32": peer}
    for runtime in runtimes_for("onnx"):
        if runtime.device != "cpu":
            continue  # a CPU table (tensorrt is a GPU row)
        if not runtime.installed or runtime.needs():
            result["runtimes"][runtime.name] = {"status": runtime.needs() or f"not installed: pip install '{runtime.install}'"}
            continue
        opened = time.perf_counter()
        session = runtime.open(path, "cpu", threads)
        entry = {"open_s": round(time.perf_counter() - opened, 2)}
        try:
            report = check_parity(net, session, export_spec.check_samples(), TOLERANCES[runtime.computes or "fp32"],
                                  TopOneAgreement())
            entry.update(status="ok", max_abs_diff=report["max_abs_diff"], top1_agreement=report["top1_agreement"])
            timers[runtime.name] = (lambda s: lambda: s(clip.numpy()))(session)
        except ParityError as err:
            entry["status"] = f"parity failed: {err}"
        result["runtimes"][runtime.name] = entry
    samples = alternate(timers, runs)
    medians = {key: statistics.median(times) for key, times in samples.items()}
    peer_median = medians.pop("pytorchvideo eager fp32")
    result["pytorchvideo_eager_fp32_ms"] = round(1000 * peer_median, 1)
    for key, median in medians.items():
        result["runtimes"][key].update(median_ms=round(1000 * median, 1), speedup_vs_eager=round(peer_median / median, 2))
    for name in ("openvino", "openvino-bf16"):
        if "onnxruntime" in medians and name in medians:
            result[f"{name}_over_onnxruntime"] = round(medians["onnxruntime"] / medians[name], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", default="slowfast_r50,x3d_s")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="runtimes", help="results file name (benchmarks/results/OUT.json)")
    args = parser.parse_args()
    results = {"cpu": cpu_features(), "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
               "backbones": []}
    import onnxruntime
    import openvino

    results["versions"] = {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}
    torch.set_num_threads(args.threads)
    for name in args.backbones.split(","):
        r = bench_backbone(name, args.runs, args.threads)
        results["backbones"].append(r)
        print(json.dumps(r, indent=1), flush=True)
    save_results(args.out, results)


if __name__ == "__main__":
    main()
