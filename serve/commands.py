"""`tiffin serve` and `tiffin build` as Python functions.

serve: starts `bentoml serve` on the task's service with TIFFIN_ARTIFACT pointing at the folder.
build: stores the artifact as a BentoML model, then builds a bento from the repository's
bentofile.yaml with the task's service and that model filled in.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from serve.artifacts import MODEL_NAMES, onnx_artifact
from tiffin.errors import TiffinError

# task -> the BentoML service that serves it
SERVICES = {"video-classification": "serve.video:VideoClassifier", "speech-recognition": "serve.speech:SpeechRecognizer"}
# the folder holding tiffin/ and serve/: bentoml's working directory and the bento's build context
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def serve_command_line(artifact: Path, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The `bentoml serve` command and environment that serve `artifact`."""
    meta = onnx_artifact(artifact)
    # BENTOML_DO_NOT_TRACK: no usage reports from a server the user did not ask to phone home
    env = {"BENTOML_DO_NOT_TRACK": "True", **os.environ, "TIFFIN_ARTIFACT": str(Path(artifact).resolve())}
    command = [sys.executable, "-m", "bentoml", "serve", SERVICES[meta["task"]], "--host", host, "--port", str(port),
               "--working-dir", str(SOURCE_ROOT)]
    return command, env


def serve(artifact: Path, host: str = "127.0.0.1", port: int = 3000, workers: int = 1,
          settings: dict[str, str] | None = None) -> None:
    """Become `bentoml serve` (exec: signals reach the server itself, Ctrl-C stops it cleanly)."""
    from serve.settings import read_settings

    command, env = serve_command_line(artifact, host, port)
    env.update({"TIFFIN_WORKERS": str(workers), **(settings or {})})
    read_settings(env)  # a bad TIFFIN_* value is a one-line error here, not a traceback per worker
    sys.stdout.flush()
    os.execve(sys.executable, command, env)


def store_model(artifact: Path, name: str | None = None):
    """Copy an artifact (tiffin.json + model file) into the BentoML model store; the Model."""
    import bentoml

    meta = onnx_artifact(artifact)
    name = name or MODEL_NAMES[meta["task"]]
    labels = {"task": meta["task"], "backbone": meta["backbone"].replace("/", "-"), "precision": meta["precision"]}
    try:
        # BentoML metadata takes plain values only: the full tiffin.json travels as a file
        metadata = {"task": meta["task"], "backbone": meta["backbone"], "sha256": meta["sha256"]}
        with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
            for file in ("tiffin.json", meta["model_file"]):
                shutil.copy2(Path(artifact) / file, Path(model.path) / file)
    except bentoml.exceptions.InvalidArgument as exc:
        raise TiffinError(f"--name {name}: {exc}") from None
    return model


def bento_options(bentofile: Path, meta: dict[str, Any], model_tag: str, name: str, gpu: bool) -> dict[str, Any]:
    """bentoml.bentos.build arguments: bentofile.yaml with the artifact's service and model filled in
    (the model's tag travels as the bento argument `model`, which BentoML restores wherever the
    bento runs: `bentoml serve TAG` or its container)."""
    import yaml

    config = yaml.safe_load(bentofile.read_text())
    python = dict(config.get("python") or {})
    if gpu:  # the CUDA build of ONNX Runtime, with CUDA and cuDNN from pip (no CUDA base image needed)
        python["packages"] = [p if not p.startswith("onnxruntime") else p.replace("onnxruntime", "onnxruntime-gpu[cuda,cudnn]", 1)
                              for p in python.get("packages", [])]
    return {
        "service": SERVICES[meta["task"]], "name": name, "description": config.get("description"),
        "labels": {**(config.get("labels") or {}), "task": meta["task"], "backbone": meta["backbone"].replace("/", "-"),
                   "precision": meta["precision"], "device": "gpu" if gpu else "cpu"},
        "include": config.get("include"), "exclude": config.get("exclude"), "python": python,
        "docker": config.get("docker"), "models": [model_tag],
        "args": {"model": model_tag}, "build_ctx": str(SOURCE_ROOT),
    }


def build(artifact: Path, name: str | None = None, gpu: bool = False) -> tuple[str, Path]:
    """Store the artifact, build the bento; (bento tag, path of its Dockerfile)."""
    import bentoml

    bentofile = SOURCE_ROOT / "bentofile.yaml"
    if not bentofile.is_file():
        raise TiffinError(f"{bentofile}: missing; `tiffin build` runs from a tiffin source checkout")
    if shutil.which("uv") is None and importlib.util.find_spec("uv") is None:
        raise TiffinError("bentoml build needs uv: pip install uv (or install tiffin[serve])")
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml")).resolve()
    if home.is_relative_to(SOURCE_ROOT):
        raise TiffinError(f"BENTOML_HOME={home} is inside the build context {SOURCE_ROOT}; "
                          "the bento would copy its own store: move it outside")
    meta = onnx_artifact(artifact)
    model = store_model(artifact, name)
    try:
        bento = bentoml.bentos.build(**bento_options(bentofile, meta, str(model.tag), name or MODEL_NAMES[meta["task"]],
                                                     gpu))
    except BaseException:
        bentoml.models.delete(model.tag)  # no orphan model in the store for a bento that was not built
        raise
    return str(bento.tag), Path(bento.path) / "env" / "docker" / "Dockerfile"
