"""Video inference on CPU: tiffin's artifacts vs PyTorchVideo eager fp32, at the zoo input sizes.

For each backbone (slowfast_r50, slow_r50, x3d_s by default) the same randomly initialised
network (no weights can be downloaded here) is run as:
  - the peer: PyTorchVideo's hub model, eager fp32, on a float clip already normalised (what a
    user of pytorchvideo + Lightning Flash runs; normalisation is not timed for it);
  - tiffin: each candidate artifact (ONNX fp32, ONNX fp16, TorchScript bf16, and eager bf16
    autocast for reference) exported through the parity gate from the same weights, taking uint8
    frames and doing its own normalisation and SlowFast packing inside the graph.
Batch 1, median of N warm calls, calls alternating between variants. Top-1 agreement with
the peer is measured on clips rendered by tiffin's synthetic generator (moving shapes).

Run: .venv/bin/python benchmarks/video_inference.py [--backbones slowfast_r50,slow_r50,x3d_s] [--runs 5]
Writes benchmarks/results/video_inference.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import alternate, save_results  # noqa: E402

from tiffin.export.formats import FORMATS  # noqa: E402
from tiffin.export.parity import ParityError, TopOneAgreement, check_parity  # noqa: E402
from tiffin.export.specs import video_export_spec  # noqa: E402
from tiffin.runtimes import runtime_for  # noqa: E402
from tiffin.spec import VideoSpec  # noqa: E402
from tiffin.train.video_lookup import get_video_backbone  # noqa: E402
from tiffin.train.synthetic import render_motion  # noqa: E402
from tiffin.train.video_model import build_video_net  # noqa: E402

CANDIDATES = [("onnx", "fp32"), ("onnx", "fp16"), ("torchscript", "bf16")]


def real_clips(n: int, frames: int, crop: int) -> torch.Tensor:
    """Clips of moving shapes (what the synthetic datasets hold), uint8 [n, T, crop, crop, 3]."""
    rng = np.random.default_rng(0)
    clips = []
    for i in range(n):
        direction = [(1, 0), (-1, 0), (0, 1), (0, -1)][i % 4]
        clips.append(render_motion(rng, direction, crop, crop, frames))
    return torch.from_numpy(np.stack(clips))


def kinetics_net(name: str):
    """(backbone info, randomly initialised 400-class network, its export spec, one real clip,
    the peer): the peer is the PyTorchVideo module itself, on that clip normalised (and packed)
    untimed. What every video benchmark times against."""
    info = get_video_backbone(name)
    spec = VideoSpec(num_frames=info.frames, clip_duration=info.clip_duration, side_size=info.side,
                     crop_size=info.crop, slowfast_alpha=info.slowfast_alpha, labels=tuple(f"class{i}" for i in range(400)))
    torch.manual_seed(0)
    net = build_video_net(name, spec).eval()
    clip = real_clips(1, info.frames, info.crop)
    with torch.inference_mode():
        peer_x = net.preprocess(clip)

    def peer() -> torch.Tensor:
        with torch.inference_mode():
            return net.backbone(list(peer_x) if isinstance(peer_x, list) else peer_x)

    return info, net, video_export_spec(info.frames, info.crop, 400), clip, peer


def bench_backbone(name: str, runs: int, agreement_clips: int) -> dict:
    info, net, export_spec, clip, peer = kinetics_net(name)
    clips = real_clips(agreement_clips, info.frames, info.crop)

    with torch.inference_mode():
        reference = net(clips)
    result = {"backbone": name, "input": f"{info.frames}x{info.crop}x{info.crop}", "variants": {}}
    timers = {"pytorchvideo eager fp32": peer}

    def eager_bf16() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net(clip)

    timers["tiffin eager bf16 autocast"] = eager_bf16
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        result["variants"]["tiffin eager bf16 autocast"] = {
            "top1_agreement": float((net(clips).float().argmax(1) == reference.argmax(1)).float().mean())}
    work = Path(tempfile.mkdtemp())
    for fmt, precision in CANDIDATES:
        key = f"tiffin {fmt} {precision}"
        path = work / f"{fmt}-{precision}{Path(FORMATS[fmt].file).suffix}"
        started = time.perf_counter()
        FORMATS[fmt].export(net, export_spec, path, precision, None, {})
        runner = runtime_for(fmt).open(path)
        try:
            from tiffin.export.specs import TOLERANCES

            check_parity(net, runner, export_spec.check_samples(), TOLERANCES[precision], TopOneAgreement())
            status = "ok"
        except ParityError as err:
            status = f"parity failed: {err}"
        agreement = float((torch.from_numpy(np.asarray(runner(clips.numpy()))).argmax(1) == reference.argmax(1)).float().mean())
        result["variants"][key] = {"status": status, "export_s": round(time.perf_counter() - started, 1),
                                   "size_mb": round(path.stat().st_size / 2**20, 1), "top1_agreement": agreement}
        if status == "ok":
            # runtime sessions take numpy, as the host path feeds them
            timers[key] = (lambda r, x: lambda: r(x))(runner, clip.numpy())
    samples = alternate(timers, runs)
    peer = statistics.median(samples["pytorchvideo eager fp32"])
    for key, times in samples.items():
        entry = result["variants"].setdefault(key, {"status": "ok"})
        median = statistics.median(times)
        entry.update(median_ms=round(1000 * median, 1), speedup=round(peer / median, 2))
    passing = {k: v for k, v in result["variants"].items() if k.startswith("tiffin") and v.get("status") == "ok"
               and "median_ms" in v and "eager" not in k}
    best = min(passing, key=lambda k: passing[k]["median_ms"]) if passing else None
    result["fastest_artifact"] = best
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", default="slowfast_r50,slow_r50,x3d_s")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--agreement-clips", type=int, default=16)
    args = parser.parse_args()
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "backbones": []}
    for name in args.backbones.split(","):
        r = bench_backbone(name, args.runs, args.agreement_clips)
        results["backbones"].append(r)
        print(json.dumps(r, indent=1), flush=True)
    save_results("video_inference", results)


if __name__ == "__main__":
    main()
