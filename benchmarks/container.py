"""What torch-free serving saves in a container: the same bento built twice into Docker images,
as `tiffin build --containerize` builds it and with torch installed beside it (what a service
that imported torch would need), on the same base image, in one run.

For each image: its size, build time, seconds from `docker run` to a ready /readyz (median of
`--starts` starts), the first request's latency after ready, and the median of later ones. The
artifacts are the embedded models exported to ONNX (tiffin/tiny-motion, tiffin/tiny-en); the
media come from `tiffin synth`. torch is the CPU build, the smallest there is (`--torch-wheel`,
default the one pip finds in /opt/wheels; its dependencies come from PyPI), so the saving
quoted is a lower bound: PyPI's default Linux torch pulls CUDA libraries on top.

Run (a Docker engine and a base image: `make base-image`):
    .venv/bin/python benchmarks/container.py [--base-image IMAGE] [--starts 3]
Writes benchmarks/results/container.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import save_results  # noqa: E402
from benchmarks.load import multipart_body  # noqa: E402

from tiffin.serve import commands, container  # noqa: E402


@contextmanager
def torch_in_the_bento(wheel: Path):
    """`tiffin build` with the torch wheel added to the bento's python wheels (nothing else changes)."""
    original = commands.bento_options

    def with_torch(*args, **kwargs):
        options = original(*args, **kwargs)
        shutil.copy2(wheel, Path(options["build_ctx"]) / "dist" / wheel.name)
        options["python"] = {**options["python"], "wheels": [*options["python"]["wheels"], f"dist/{wheel.name}"]}
        return options

    commands.bento_options = with_torch
    try:
        yield
    finally:
        commands.bento_options = original


def post(url: str, field: str, path: Path) -> float:
    boundary = uuid.uuid4().hex
    body = multipart_body(boundary, [(field, path.name, path.read_bytes())])
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        assert answer.status == 200, answer.status
        answer.read()
    return time.perf_counter() - started


def measure_runs(image: str, api: str, field: str, media: Path, starts: int) -> dict:
    ready, first, later = [], [], []
    for _ in range(starts):
        name = f"tiffin-bench-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        subprocess.run(["docker", "run", "-d", "--name", name, "-p", "127.0.0.1::3000", image],
                       check=True, capture_output=True)
        try:
            url = "http://" + subprocess.run(["docker", "port", name, "3000/tcp"], check=True, capture_output=True,
                                             text=True).stdout.split()[0]
            while True:
                try:
                    if urllib.request.urlopen(url + "/readyz", timeout=2).status == 200:
                        break
                except OSError:
                    time.sleep(0.05)
                if time.perf_counter() - started > 300:
                    raise RuntimeError(f"{image}: not ready in 300 s")
            ready.append(time.perf_counter() - started)
            first.append(post(f"{url}/{api}", field, media))
            later.extend(post(f"{url}/{api}", field, media) for _ in range(10))
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    return {"ready_s": round(statistics.median(ready), 2), "ready_s_all": [round(r, 2) for r in ready],
            "first_request_ms": round(1000 * statistics.median(first), 1),
            "later_request_ms": round(1000 * statistics.median(later), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-image", default=None)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--torch-wheel", type=Path, default=None)
    args = parser.parse_args()
    base = args.base_image or container.base_image()
    wheel = args.torch_wheel or Path(sorted(glob.glob("/opt/wheels/torch-*+cpu-*.whl"))[-1])
    work = Path(tempfile.mkdtemp(prefix="tiffin-container-bench-"))
    os.environ["BENTOML_HOME"] = str(work / "bentoml")
    tiffin = [sys.executable, "-m", "tiffin"]
    subprocess.run([*tiffin, "synth", "video", str(work / "video"), "--per-class", "1", "--seed", "5"], check=True,
                   capture_output=True)
    subprocess.run([*tiffin, "synth", "speech", str(work / "speech"), "--count", "1", "--seed", "5"], check=True,
                   capture_output=True)
    tasks = {"video": ("tiffin/tiny-motion", "classify", "video", sorted((work / "video").rglob("*.mkv"))[0]),
             "speech": ("tiffin/tiny-en", "transcribe", "audio", sorted((work / "speech").glob("*.wav"))[0])}
    results = {"machine": {"cpu": _cpu_model(), "cores": os.cpu_count(),
                           "docker": container.engine_version(), "base_image": base},
               "torch_wheel": wheel.name, "images": {}}
    for task, (model, api, field, media) in tasks.items():
        artifact = work / task / "onnx"
        subprocess.run([*tiffin, "export", model, "--out", str(artifact)], check=True, capture_output=True)
        for variant in ("torch-free", "with torch"):
            tag = f"tiffin-bench-{task}-{variant.replace(' ', '-')}:latest"
            started = time.perf_counter()
            if variant == "with torch":
                with torch_in_the_bento(wheel):
                    _, image = commands.build_image(artifact, f"bench-{task}", base_image=base, image_tag=tag)
            else:
                _, image = commands.build_image(artifact, f"bench-{task}", base_image=base, image_tag=tag)
            built_s = time.perf_counter() - started
            runs = measure_runs(tag, api, field, media, args.starts)
            results["images"][f"{task}, {variant}"] = {"size_mb": image["size_mb"], "build_s": round(built_s, 1), **runs}
            print(f"{task:6} {variant:10} {image['size_mb']:7.0f} MB  build {built_s:5.1f} s  ready {runs['ready_s']:5.2f} s  "
                  f"first {runs['first_request_ms']:7.1f} ms  later {runs['later_request_ms']:6.1f} ms", flush=True)
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    print(json.dumps(results, indent=2))
    print(save_results("container", results))
    shutil.rmtree(work, ignore_errors=True)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
