"""`tiffin build --containerize`: the bento built into a Docker image and run as a container.

Answers equal `tiffin predict`; nothing of torch, Lightning or transformers inside; the server
runs as a non-root user; the image's HEALTHCHECK turns healthy on /readyz; TIFFIN_* settings come
from the container's environment; requests in flight at `docker stop` are answered. Needs a Docker
engine (`make container` installs and starts one as root, and makes a base image when none can
be pulled); skipped, saying so, where there is none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager

import pytest

from tests.helpers import post_multipart, predict_json, slow_video

pytestmark = pytest.mark.docker
HEAVY = ("torch", "lightning", "pytorch-lightning", "transformers", "pytorchvideo", "torchaudio")


def docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def base_image() -> str:
    from tiffin.errors import TiffinError
    from tiffin.serve import container

    try:
        container.engine_version()
    except TiffinError as err:
        pytest.skip(f"no Docker engine here ({err})")
    return os.environ.get("TIFFIN_BASE_IMAGE") or container.base_image()


@pytest.fixture(scope="module")
def images(base_image, artifacts, tmp_path_factory):
    """One image per task, built by `tiffin build --containerize` into a BentoML home of the test's."""
    home = tmp_path_factory.mktemp("bentoml")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    built = {}
    try:
        for task in ("video", "speech"):
            tag = f"tiffin-test-{task}:{uuid.uuid4().hex[:8]}"
            out = subprocess.run([sys.executable, "-m", "tiffin", "build", str(artifacts[task]), "--containerize",
                                  "--base-image", base_image, "--image-tag", tag],
                                 env=env, capture_output=True, text=True, timeout=1200)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
            assert f"image {tag} (" in out.stdout and "docker run" in out.stdout
            built[task] = tag
        yield built
    finally:
        for tag in built.values():
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@contextmanager
def running(image: str, **env: str):
    """`docker run -d IMAGE` on a free loopback port; yields (name, url) once /readyz answers."""
    name = f"tiffin-test-{uuid.uuid4().hex[:8]}"
    settings = [f"--env={k}={v}" for k, v in env.items()]
    docker("run", "-d", "--name", name, "-p", "127.0.0.1::3000", *settings, image)
    try:
        url = "http://" + docker("port", name, "3000/tcp").splitlines()[0]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(url + "/readyz", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail(f"{image} not ready in 180 s: {docker('logs', name)[-3000:]}")
        yield name, url
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_the_video_image_answers_as_predict_torch_free_non_root_and_healthy(images, artifacts, videos):
    with running(images["video"], TIFFIN_MAX_UPLOAD_MB="1") as (name, url):
        expected = predict_json(artifacts["video"], videos, "--top-k", "3")
        for video, want in zip(videos, expected):
            status, body = post_multipart(url + "/classify", "video", video.read_bytes(), video.name, {"top_k": "3"})
            assert status == 200 and body["labels"] == want["labels"], (video, body)
        # TIFFIN_* from the container's environment: the 1 MB upload limit
        status, body = post_multipart(url + "/classify", "video", os.urandom(2 * 2**20), "big.mp4")
        assert status == 413 and "TIFFIN_MAX_UPLOAD_MB" in body["error"], body

        installed = json.loads(docker("exec", name, "python", "-c", "import importlib.metadata as m, json; "
                                      "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))"))
        assert {"onnxruntime", "av", "bentoml", "tiffin"} <= set(installed)
        assert not set(HEAVY) & set(installed), installed
        assert docker("exec", name, "id", "-u") != "0"

        config = json.loads(docker("image", "inspect", images["video"]))[0]["Config"]
        assert config["User"] == "bentoml" and "/readyz" in " ".join(config["Healthcheck"]["Test"])
        deadline = time.monotonic() + 90
        while (health := json.loads(docker("inspect", name))[0]["State"]["Health"]["Status"]) != "healthy":
            assert health != "unhealthy" and time.monotonic() < deadline, docker("inspect", name)[-2000:]
            time.sleep(1)


def test_the_speech_image_transcribes_as_predict(images, artifacts, recordings):
    with running(images["speech"]) as (_, url):
        expected = predict_json(artifacts["speech"], recordings[:4])
        for recording, want in zip(recordings, expected):
            status, body = post_multipart(url + "/transcribe", "audio", recording.read_bytes(), recording.name)
            assert status == 200 and body["text"] == want["text"], (recording, body)


def test_requests_in_flight_at_docker_stop_are_answered(images, tmp_path):
    """`docker stop` sends SIGTERM to the container's PID 1 (BentoML's process manager): the requests
    already in flight are answered with 200 before it exits, and the container exits cleanly."""
    video = slow_video(tmp_path / "slow.mp4")
    done: list[tuple[int, float]] = []
    with running(images["video"], TIFFIN_CLIPS="48") as (name, url):
        def send() -> None:
            status, _ = post_multipart(url + "/classify", "video", video.read_bytes(), video.name)
            done.append((status, time.monotonic()))

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        stopped_at = time.monotonic()
        docker("stop", "-t", "60", name)
        for t in threads:
            t.join(timeout=60)
        state = json.loads(docker("inspect", name))[0]["State"]
    assert [status for status, _ in done] == [200] * 4
    assert max(at for _, at in done) > stopped_at  # some were still in flight at docker stop
    assert state["ExitCode"] == 0 and not state["OOMKilled"]


def test_the_gpu_image_runs_onnxruntime_gpu_and_falls_back_to_the_cpu_without_a_gpu(base_image, artifacts,
                                                                                     videos, tmp_path):
    """`--gpu` builds on the same base (CUDA and cuDNN come from pip); on this GPU-less machine the
    container answers on the CPU as predict does, and device cuda names what is missing."""
    tag = f"tiffin-test-video-gpu:{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    out = subprocess.run([sys.executable, "-m", "tiffin", "build", str(artifacts["video"]), "--gpu", "--containerize",
                          "--base-image", base_image, "--image-tag", tag], env=env, capture_output=True, text=True,
                         timeout=1800)
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        assert "docker run --rm --gpus all -p 3000:3000" in out.stdout
        with running(tag) as (name, url):
            installed = docker("exec", name, "python", "-c", "import importlib.metadata as m; "
                               "print(' '.join(d.metadata['Name'].lower() for d in m.distributions()))").split()
            assert "onnxruntime-gpu" in installed and "nvidia-cublas" in installed and "onnxruntime" not in installed
            status, body = post_multipart(url + "/classify", "video", videos[0].read_bytes(), videos[0].name)
            assert status == 200 and body["labels"] == predict_json(artifacts["video"], videos[:1])[0]["labels"]
            if shutil.which("nvidia-smi") is None:  # no GPU on this host (the case on CI machines)
                said = subprocess.run(["docker", "exec", name, "python", "-c", "from tiffin.onnx_session import "
                                       "providers_for as p; print(p('auto')); p('cuda')"], capture_output=True, text=True)
                assert "['CPUExecutionProvider']" in said.stdout and "no NVIDIA driver here" in said.stderr
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_a_base_image_that_cannot_be_had_is_one_line_and_stores_nothing(base_image, artifacts, tmp_path):
    home = tmp_path / "bentoml"
    out = subprocess.run([sys.executable, "-m", "tiffin", "build", str(artifacts["video"]), "--containerize",
                          "--base-image", "tiffin-no-such-image:0"],
                         env={**os.environ, "BENTOML_HOME": str(home)}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "--base-image tiffin-no-such-image:0: not here and it cannot be pulled" in out.stderr
    assert "make base-image" in out.stderr and "Traceback" not in out.stderr
    assert not any(home.rglob("tiffin.json"))  # no model stored, no bento built
