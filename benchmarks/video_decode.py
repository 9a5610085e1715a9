"""Video input pipeline: tiffin's clip decoding vs PyTorchVideo's (Lightning Flash's path).

Both produce the same clip: `frames` frames sampled uniformly over `clip` seconds, short side
resized to `side`, centre crop `crop`. The peer is `EncodedVideo.from_path(decoder="pyav")`
+ `get_clip` + uniform temporal subsampling + short-side scale + centre crop, as Flash's
VideoClassificationInputTransform does (written out with torch ops because
`pytorchvideo.transforms` no longer imports with torchvision 0.26).
Both run in this process, alternating, on the same generated files; the ratio is what counts.

Run: .venv/bin/python benchmarks/video_decode.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiffin.video_io import center_crop, decode_clip  # noqa: E402
from tiffin.train.synthetic import render_motion, write_video  # noqa: E402

FRAMES, CLIP, SIDE, CROP = 8, 2.0, 256, 224


def make_video(path: Path, seconds: float, width: int, height: int, fps: int = 30) -> Path:
    rng = np.random.default_rng(0)
    frames = render_motion(rng, (1.0, 0.0), width, height, int(seconds * fps))
    write_video(path, frames, fps, "libx264", {"crf": "23", "preset": "veryfast", "g": "60"})
    return path


def tiffin_clip(path: Path, start: float) -> torch.Tensor:
    return torch.from_numpy(center_crop(decode_clip(path, start, CLIP, FRAMES, SIDE), CROP))


def pytorchvideo_clip(path: Path, start: float) -> torch.Tensor:
    from pytorchvideo.data.encoded_video import EncodedVideo

    video = EncodedVideo.from_path(str(path), decode_audio=False, decoder="pyav")
    x = video.get_clip(start, start + CLIP)["video"]  # [C, T, H, W] float, every frame of the clip
    video.close()
    x = x.index_select(1, torch.linspace(0, x.shape[1] - 1, FRAMES).long())  # UniformTemporalSubsample
    c, t, h, w = x.shape  # ShortSideScale
    size = (SIDE, int(w * SIDE / h)) if h < w else (int(h * SIDE / w), SIDE)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (x.shape[2] - CROP) // 2, (x.shape[3] - CROP) // 2  # CenterCrop
    return x[:, :, top : top + CROP, left : left + CROP]


def measure(fn, path: Path, start: float, repeats: int) -> float:
    fn(path, start)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(path, start)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        videos = {
            "short 4 s 640x360": make_video(Path(tmp) / "short.mp4", 4, 640, 360),
            "long 60 s 640x360": make_video(Path(tmp) / "long.mp4", 60, 640, 360),
        }
        print(f"clip: {FRAMES} frames over {CLIP}s, short side {SIDE}, crop {CROP}; median of {args.repeats}\n")
        print("| video | clip | tiffin clips/s | pytorchvideo clips/s | speed-up |")
        print("|---|---|---:|---:|---:|")
        for name, path in videos.items():
            seconds = 4 if name.startswith("short") else 60
            for where, start in (("start", 0.0), ("middle", seconds / 2 - CLIP / 2)):
                ours = measure(tiffin_clip, path, start, args.repeats)
                peer = measure(pytorchvideo_clip, path, start, args.repeats)
                print(f"| {name} | {where} | {1 / ours:.1f} | {1 / peer:.1f} | {peer / ours:.1f}x |")


if __name__ == "__main__":
    main()
