"""The GPU part of the benchmarks, for any CUDA machine (none was lent to the session that wrote it).

1. Fine-tuning steps of the full-size models with 16-bit mixed precision (torch.autocast fp16 +
   GradScaler, what Lightning's `16-mixed` does): SlowFast-R50 at 32 x 224 and wav2vec2-base
   on 10 s recordings, batch 8. Samples/s, peak GPU memory, GPU utilisation sampled with
   nvidia-smi. For video, once from batches already on the GPU and once from tiffin's own
   training loader (synthetic videos, 8 workers): if the loader run is slower, the loader does
   not keep the GPU busy.
2. Inference latency, batch 1: ONNX Runtime CUDA fp16 (tiffin's artifact) and the same file on the
   tensorrt runtime (ONNX Runtime's TensorRT provider; its error when TensorRT is missing) vs torch
   eager fp16.

Run: .venv/bin/python benchmarks/gpu.py [--steps 20]   (needs onnxruntime-gpu: pip install '.[gpu]')
Writes benchmarks/results/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import save_results  # noqa: E402

BATCH = 8


def utilisation(stop: threading.Event, samples: list[float]) -> None:
    while not stop.is_set():
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            samples.append(float(out.stdout.split()[0]))
        time.sleep(0.2)


def train_steps(net: torch.nn.Module, batches, loss_fn, steps: int) -> dict:
    """Mixed-precision training steps; samples/s after 3 warm-up steps, peak memory, utilisation."""
    net.cuda().train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    torch.cuda.reset_peak_memory_stats()
    stop, util = threading.Event(), []
    watcher = threading.Thread(target=utilisation, args=(stop, util), daemon=True)
    done, start = 0, None
    for batch in batches:
        if done == 3:
            torch.cuda.synchronize()
            start = time.perf_counter()
            watcher.start()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = loss_fn(net, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        done += 1
        if done == steps + 3:
            break
    torch.cuda.synchronize()
    stop.set()
    seconds = time.perf_counter() - start
    return {"samples_per_s": round(steps * BATCH / seconds, 1), "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "gpu_utilisation_pct": round(statistics.mean(util), 1) if util else None}


def video(steps: int, work: Path) -> dict:
    from torch.utils.data import DataLoader

    from tiffin.spec import VideoSpec
    from tiffin.train.video_lookup import get_video_backbone
    from tiffin.train.synthetic import make_motion_dataset
    from tiffin.train.video_data import EpochShuffle, VideoClipDataset, collate_clips, discover_folder, probe_all
    from tiffin.train.video_model import build_video_net

    info = get_video_backbone("slowfast_r50")
    spec = VideoSpec(num_frames=info.frames, clip_duration=info.clip_duration, side_size=info.side, crop_size=info.crop,
                     slowfast_alpha=info.slowfast_alpha, labels=tuple(f"c{i}" for i in range(4)))
    loss = lambda net, b: torch.nn.functional.cross_entropy(net(b["video"].cuda(non_blocking=True)),  # noqa: E731
                                                            b["label"].cuda(non_blocking=True))
    resident = {"video": torch.randint(0, 256, (BATCH, info.frames, info.crop, info.crop, 3), dtype=torch.uint8),
                "label": torch.randint(0, 4, (BATCH,))}
    out = {"on_gpu_batches": train_steps(build_video_net("slowfast_r50", spec), iter(lambda: resident, None), loss, steps)}
    make_motion_dataset(work / "videos", per_class=40, seed=0, size=(320, 240))
    videos, _ = probe_all(discover_folder(work / "videos"))
    dataset = VideoClipDataset(videos, sorted({v.label for v in videos}), spec, train=True)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=EpochShuffle(len(dataset)), num_workers=8, pin_memory=True,
                        collate_fn=collate_clips, persistent_workers=True)
    endless = (b for _ in range(100) for b in loader)
    out["tiffin_loader_8_workers"] = train_steps(build_video_net("slowfast_r50", spec), endless, loss, steps)
    return out


def speech(steps: int) -> dict:
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    model = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=32))
    model.freeze_feature_encoder()
    batch = {"input_values": torch.randn(BATCH, 160000).cuda(), "labels": torch.randint(1, 32, (BATCH, 120)).cuda()}
    return {"on_gpu_batches": train_steps(model, iter(lambda: batch, None), lambda net, b: net(**b).loss, steps)}


def inference(work: Path) -> dict:
    import numpy as np

    from tiffin.export.benchmark import time_calls
    from tiffin.export.formats import FORMATS
    from tiffin.export.specs import video_export_spec
    from tiffin.onnx_session import OnnxSession
    from tiffin.spec import VideoSpec
    from tiffin.train.video_lookup import get_video_backbone
    from tiffin.train.video_model import build_video_net

    info = get_video_backbone("slowfast_r50")
    spec = VideoSpec(num_frames=info.frames, clip_duration=info.clip_duration, side_size=info.side, crop_size=info.crop,
                     slowfast_alpha=info.slowfast_alpha, labels=tuple(f"c{i}" for i in range(400)))
    net = build_video_net("slowfast_r50", spec).eval()
    path = work / "slowfast-fp16.onnx"
    FORMATS["onnx"].export(net, video_export_spec(info.frames, info.crop, 400), path, "fp16", None, {})
    clip = torch.randint(0, 256, (1, info.frames, info.crop, info.crop, 3), dtype=torch.uint8)
    session = OnnxSession(path, device="cuda")

    def timed(run) -> float:
        return round(1000 * statistics.median(time_calls(run, runs=20, warmup=5)), 2)

    half = net.half().cuda()
    gpu_clip = clip.cuda()

    def eager() -> None:
        with torch.inference_mode():  # .half() made the normalisation buffers fp16 too: the graph runs in fp16
            half(gpu_clip)
        torch.cuda.synchronize()

    result = {"providers": session.providers, "onnxruntime_cuda_fp16_ms": timed(lambda: session(np.asarray(clip))),
              "torch_eager_fp16_ms": timed(eager)}
    from tiffin.runtimes import RUNTIMES

    try:  # the tensorrt row of tiffin's runtime table (its first call builds the engine: minutes)
        trt = RUNTIMES["tensorrt"].open(path, "cuda")
        result["tensorrt_fp16_ms"] = timed(lambda: trt(np.asarray(clip)))
        diff = np.abs(trt(np.asarray(clip)).astype(np.float32) - session(np.asarray(clip)).astype(np.float32)).max()
        result["tensorrt_max_abs_diff_vs_cuda"] = float(diff)
    except Exception as err:  # noqa: BLE001  a missing TensorRT is a figure of its own, not the end
        result["tensorrt"] = (str(err).splitlines() or [type(err).__name__])[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU")
    work = Path(tempfile.mkdtemp())
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch": BATCH,
               "slowfast_r50_16_mixed": video(args.steps, work), "wav2vec2_base_16_mixed": speech(args.steps),
               "slowfast_r50_inference_batch1": inference(work)}
    print(json.dumps(results, indent=1))
    save_results("gpu", results)


if __name__ == "__main__":
    main()
