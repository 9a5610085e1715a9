"""The served model against the fastest in-process variant, on this CPU, in one run.

A full-size video network (slowfast_r50 by default, randomly initialised: no weights can be
downloaded here) gets a checkpoint from one short `tiffin train` epoch on generated videos, then:
  1. `tiffin export` to ONNX fp32 and to TorchScript bf16 (the fastest in-process variant on a
     CPU with AMX or AVX-512 bf16), each through the parity gate;
  2. `tiffin benchmark ONNX_ARTIFACT --record`: every installed ONNX runtime (ONNX Runtime,
     OpenVINO fp32, OpenVINO with its bf16 hint where the CPU has bf16) behind the gate, the
     fastest written into tiffin.json: what the services then run;
  3. in-process, alternating: eager fp32 (the checkpoint's network on the uint8 clip), the
     TorchScript bf16 artifact, and the ONNX artifact on every runtime; top-1 agreement of
     each with eager fp32 on 16 generated clips; and "predict", the served artifact's in-process
     `tiffin predict` path (probe, decode, crop, recorded runtime, top-k) on the uploaded videos;
  4. `tiffin serve ONNX_ARTIFACT` (the recorded runtime, batching off), batch 1 at concurrency 1
     over HTTP for --seconds, the load generator in a child process; then step 3's timings again (the in-process figure is the mean of
     the two, so drift during the HTTP run is bracketed).
The goal read off it: the served model's speed-up over eager fp32 is at least 80% of
TorchScript bf16's (served latency <= TorchScript bf16's / 0.8), with >= 99% top-1 agreement;
and the served latency over the in-process model call and over the in-process predict path.

`--backbone videomae-base` runs a Hugging Face video transformer instead: VideoMAE-base's own
configuration (16 frames of 224 px, 87M parameters, randomly initialised, its video processor)
written as a save_pretrained folder and given as --backbone, the way a user's Hub download arrives.

Run: .venv/bin/python benchmarks/served_runtimes.py [--backbone slowfast_r50|videomae-base] [--seconds 30]
Writes benchmarks/results/served_runtimes.json (served_runtimes_BACKBONE.json for another backbone).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import alternate, save_results, tiffin  # noqa: E402
from benchmarks.load import Upload, run_load, started_server  # noqa: E402
from benchmarks.video_inference import real_clips  # noqa: E402

from tiffin.cpu import cpu_features  # noqa: E402


def in_process(loaded, artifacts: dict[str, tuple[Path, str | None]], clip: torch.Tensor, clips: torch.Tensor,
               runs: int, served: tuple[Path, list[Path]]) -> dict:
    """Median ms of each variant on `clip` (alternating) and its top-1 agreement with eager fp32 on
    `clips`; and "predict": the served artifact's `tiffin predict` path in this process (probe, decode,
    crop, its recorded runtime, top-k) over the videos the HTTP run uploads, in turn: what the
    service does for a request, less HTTP."""
    import itertools

    from tiffin.host import open_artifact

    def eager(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return loaded.net(x).numpy()

    calls = {"eager fp32": eager}
    for name, (folder, runtime) in artifacts.items():
        session = open_artifact(folder, runtime=runtime)[0].session
        calls[name] = (lambda s: lambda x: s(x.numpy()))(session)
    reference = eager(clips).argmax(1)
    agreement = {name: float(np.mean(np.asarray(call(clips)).argmax(1) == reference)) for name, call in calls.items()}
    timers = {name: (lambda c: lambda: c(clip))(call) for name, call in calls.items()}
    predictor, videos = open_artifact(served[0])[0], itertools.cycle(served[1])
    timers["predict"] = lambda: predictor.predict([next(videos)], top_k=1)
    samples = alternate(timers, runs)
    return {name: {"median_ms": round(1000 * statistics.median(times), 1), "top1_agreement": agreement.get(name)}
            for name, times in samples.items()}


def videomae_base(folder: Path) -> str:
    """A save_pretrained folder of VideoMAE-base's architecture (transformers' default config: 16 x 224,
    12 layers of 768) with random weights and its video processor: what a Hub id's snapshot holds."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEVideoProcessor

    torch.manual_seed(0)
    VideoMAEForVideoClassification(VideoMAEConfig(num_labels=400)).save_pretrained(folder)
    VideoMAEVideoProcessor().save_pretrained(folder)
    return str(folder)


def uploads(data: Path) -> list[Path]:
    """The generated videos the HTTP run uploads (and the in-process "predict" decodes)."""
    return sorted(p for p in data.rglob("*") if p.is_file() and p.suffix in (".mp4", ".avi", ".webm", ".mkv"))


def http(artifact: Path, data: Path, seconds: float) -> dict:
    """`tiffin serve ARTIFACT` (its recorded runtime, batching off) asked for the videos of `data`
    one at a time for `seconds`, after a 5 s warm-up: the load summary."""
    videos = uploads(data)
    env = {"TIFFIN_BATCHING": "0", "BENTOML_HOME": str(data.parent / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    mix = [Upload(f, True, (("top_k", "1"),)) for f in videos]
    with started_server(["tiffin", "serve", str(artifact)], data.parent / "serve.log", env) as (url, _):
        run_load(url + "/classify", "video", mix, 1, 5)  # warm-up
        return run_load(url + "/classify", "video", mix, 1, seconds).summary()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="slowfast_r50")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--agreement-clips", type=int, default=16)
    parser.add_argument("--http", nargs=3, metavar="ARTIFACT DATA SECONDS", help=argparse.SUPPRESS)  # run in a child
    args = parser.parse_args()
    if args.http:
        print(json.dumps(http(Path(args.http[0]), Path(args.http[1]), float(args.http[2]))))
        return
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="tiffin-served-"))
    results: dict = {"cpu": cpu_features(), "cores": threads, "torch": torch.__version__, "backbone": args.backbone,
                     "seconds_per_http_run": args.seconds}
    started = time.perf_counter()
    tiffin("synth", "video", work / "data", "--per-class", "2", "--seed", "0")
    backbone = videomae_base(work / "videomae-base") if args.backbone == "videomae-base" else args.backbone
    tiffin("train", "video", "--train-folder", work / "data", "--backbone", backbone, "--no-pretrained",
           "--max-epochs", "1", "--batch-size", "4", "--seed", "0", "--out", work / "run")
    checkpoint = work / "run" / "checkpoints" / "best.ckpt"
    results["train_s"] = round(time.perf_counter() - started, 1)
    for fmt, precision in (("onnx", "fp32"), ("torchscript", "bf16")):
        began = time.perf_counter()
        results[f"export_{fmt}_{precision}"] = {"line": tiffin("export", checkpoint, "--format", fmt, "--precision",
                                                               precision, "--out", work / f"{fmt}-{precision}").strip(),
                                                "seconds": round(time.perf_counter() - began, 1)}
    onnx = work / "onnx-fp32"
    rows = json.loads(tiffin("benchmark", onnx, "--batch", "1", "--runs", "5", "--json", "--record"))
    results["benchmark_rows"] = [{k: r.get(k) for k in ("runtime", "status", "note", "latency_ms", "speedup")}
                                 for r in rows]
    recorded = json.loads((onnx / "tiffin.json").read_text())["runtime"]
    results["recorded_runtime"] = recorded
    print("recorded runtime:", recorded, flush=True)

    from tiffin.runtimes import runtimes_for
    from tiffin.train.predict import load_model

    loaded = load_model(checkpoint)
    spec = loaded.spec
    clips = real_clips(args.agreement_clips, spec.num_frames, spec.crop_size)
    clip = clips[:1]
    passed = {r["runtime"] for r in rows if r["status"] == "ok"}
    artifacts = {"torchscript bf16": (work / "torchscript-bf16", None)}
    artifacts.update({f"onnx fp32 on {r.name}": (onnx, r.name) for r in runtimes_for("onnx") if r.name in passed})
    served = (onnx, uploads(work / "data"))
    before = in_process(loaded, artifacts, clip, clips, args.runs, served)
    print(json.dumps(before, indent=1), flush=True)

    # the load generator in a process of its own: this one holds the in-process sessions' thread pools
    summary = json.loads(subprocess.run([sys.executable, __file__, "--http", str(onnx), str(work / "data"),
                                         str(args.seconds)], check=True, capture_output=True, text=True
                                        ).stdout.strip().splitlines()[-1])
    assert summary["failed_good"] == 0, summary
    results["http"] = summary
    after = in_process(loaded, artifacts, clip, clips, args.runs, served)
    print(json.dumps(after, indent=1), flush=True)
    results["in_process"] = {name: {"median_ms": round((before[name]["median_ms"] + after[name]["median_ms"]) / 2, 1),
                                    "before_ms": before[name]["median_ms"], "after_ms": after[name]["median_ms"],
                                    "top1_agreement": before[name]["top1_agreement"]} for name in before}
    ip = results["in_process"]
    eager, ts = ip["eager fp32"]["median_ms"], ip["torchscript bf16"]["median_ms"]
    served = summary["p50_ms"]
    results["speedup_vs_eager_fp32"] = {"torchscript bf16": round(eager / ts, 2), "served": round(eager / served, 2),
                                        **{name: round(eager / v["median_ms"], 2) for name, v in ip.items() if name != "predict"}}
    results["served_share_of_torchscript_bf16_speedup"] = round(ts / served, 3)
    results["served_over_recorded_model_call"] = round(served / ip[f"onnx fp32 on {recorded}"]["median_ms"], 3)
    results["served_over_in_process_predict"] = round(served / ip["predict"]["median_ms"], 3)
    print(json.dumps({k: results[k] for k in ("recorded_runtime", "speedup_vs_eager_fp32",
                                              "served_share_of_torchscript_bf16_speedup",
                                              "served_over_recorded_model_call", "served_over_in_process_predict")},
                     indent=1))
    save_results("served_runtimes" if args.backbone == "slowfast_r50" else f"served_runtimes_{args.backbone}", results)


if __name__ == "__main__":
    main()
