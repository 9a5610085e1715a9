"""`tiffin serve` and `tiffin build` as Python functions.

serve: starts `bentoml serve` on the task's service with TIFFIN_ARTIFACT pointing at the folder.
build: stores the artifact as a BentoML model, writes tiffin's torch-free serving wheel
(tiffin.serve.wheel) into a fresh build context, and builds a bento from bentofile.yaml (shipped
inside the package, so this works from an installed wheel as from a checkout) with the task's
service and that model filled in.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tiffin.serve.artifacts import onnx_artifact
from tiffin.errors import TiffinError
from tiffin.tasks import TASKS

# the bento's build config, inside the package (a link to the repository's bentofile.yaml)
BENTOFILE = Path(__file__).resolve().parent / "bentofile.yaml"


def serve_command_line(artifact: Path, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The `bentoml serve` command and environment that serve `artifact`."""
    meta = onnx_artifact(artifact)
    # BENTOML_DO_NOT_TRACK: no usage reports from a server the user did not ask to phone home
    env = {"BENTOML_DO_NOT_TRACK": "True", **os.environ, "TIFFIN_ARTIFACT": str(Path(artifact).resolve())}
    # the service is imported as an installed module: no working directory to put on sys.path
    command = [sys.executable, "-m", "bentoml", "serve", TASKS[meta["task"]].service, "--host", host, "--port", str(port)]
    return command, env


def checked_command_line(artifact: Path, host: str = "127.0.0.1", port: int = 3000, workers: int = 1,
                         settings: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """`serve_command_line` with the workers and TIFFIN_* settings, checked before any process
    starts: a bad value or another BentoML is one line here, not a traceback per worker."""
    from tiffin.serve import bentoml_patches
    from tiffin.serve.settings import read_settings

    command, env = serve_command_line(artifact, host, port)
    for name in bentoml_patches.PATCHES:
        bentoml_patches.check(name)
    env.update({"TIFFIN_WORKERS": str(workers), **{k: str(v) for k, v in (settings or {}).items()}})
    read_settings(env)
    return command, env


def serve(artifact: Path, host: str = "127.0.0.1", port: int = 3000, workers: int = 1,
          settings: dict[str, str] | None = None) -> None:
    """Become `bentoml serve` (exec: signals reach the server itself, Ctrl-C stops it cleanly).
    The CLI's way; from Python, `tiffin.serve.server.start` runs it as a child process instead."""
    command, env = checked_command_line(artifact, host, port, workers, settings)
    sys.stdout.flush()
    os.execve(sys.executable, command, env)


def store_model(artifact: Path, name: str | None = None):
    """Copy an artifact (tiffin.json + model file) into the BentoML model store; the Model."""
    import bentoml

    meta = onnx_artifact(artifact)
    name = name or TASKS[meta["task"]].bento_model
    labels = {"task": meta["task"], "backbone": meta["backbone"].replace("/", "-"), "precision": meta["precision"]}
    try:
        # BentoML metadata takes plain values only: the full tiffin.json travels as a file
        metadata = {"task": meta["task"], "backbone": meta["backbone"], "sha256": meta["sha256"]}
        with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
            decoder = meta.get("decoder") or {}
            for file in ("tiffin.json", meta["model_file"], *(decoder[k]["file"] for k in ("words", "lm")
                                                              if decoder.get(k))):
                shutil.copy2(Path(artifact) / file, Path(model.path) / file)
    except bentoml.exceptions.InvalidArgument as exc:
        raise TiffinError(f"--name {name}: {exc}") from None
    return model


def bento_options(bentofile: Path, meta: dict[str, Any], model_tag: str, name: str, gpu: bool, context: Path
                  ) -> dict[str, Any]:
    """bentoml.bentos.build arguments: bentofile.yaml with the artifact's service and model filled in
    (the model's tag travels as the bento argument `model`, which BentoML restores wherever the
    bento runs: `bentoml serve TAG` or its container), built from `context`, which holds the
    serving wheel and the bentofile."""
    import yaml

    from tiffin.serve.wheel import serving_wheel

    config = yaml.safe_load(bentofile.read_text())
    shutil.copy2(bentofile, context / "bentofile.yaml")
    wheel = serving_wheel(context / "dist" / "serving")
    python = {**(config.get("python") or {}), "wheels": [str(wheel.relative_to(context))]}
    if meta.get("decoder"):  # beam search in the service: flashlight-text, at the tested version
        python["packages"] = [*python.get("packages", []), _pinned("flashlight-text")]
    if gpu and meta.get("runtime") == "openvino":
        raise TiffinError("--gpu: this artifact records runtime openvino (CPU); a GPU bento runs ONNX Runtime CUDA: "
                          "remove \"runtime\" from its tiffin.json, or build without --gpu")
    if meta.get("runtime") == "openvino":  # the runtime `tiffin benchmark --record` chose, in place of ONNX Runtime
        python["packages"] = [*(p for p in python.get("packages", []) if not p.startswith("onnxruntime")),
                              _pinned("openvino")]
    if gpu:  # the CUDA build of ONNX Runtime, with CUDA and cuDNN from pip (no CUDA base image needed)
        python["packages"] = [p if not p.startswith("onnxruntime") else p.replace("onnxruntime", "onnxruntime-gpu[cuda,cudnn]", 1)
                              for p in python.get("packages", [])]
    return {
        "service": TASKS[meta["task"]].service, "name": name, "description": config.get("description"),
        "labels": {**(config.get("labels") or {}), "task": meta["task"], "backbone": meta["backbone"].replace("/", "-"),
                   "precision": meta["precision"], "device": "gpu" if gpu else "cpu"},
        "include": config.get("include"), "exclude": config.get("exclude"), "python": python,
        "docker": config.get("docker"), "models": [model_tag],
        "args": {"model": model_tag}, "build_ctx": str(context),
    }


def _pinned(package: str) -> str:
    """`package==VERSION` at the version installed here (the one the tests ran)."""
    from importlib.metadata import version

    return f"{package}=={version(package)}"


def build(artifact: Path, name: str | None = None, gpu: bool = False) -> tuple[str, Path]:
    """Store the artifact, build the bento; (bento tag, path of its Dockerfile)."""
    import bentoml

    if not BENTOFILE.is_file():
        raise TiffinError(f"{BENTOFILE}: missing from this tiffin installation; reinstall tiffin[serve]")
    if shutil.which("uv") is None and importlib.util.find_spec("uv") is None:
        raise TiffinError("bentoml build needs uv: pip install uv (or install tiffin[serve])")
    meta = onnx_artifact(artifact)
    model = store_model(artifact, name)
    try:
        with tempfile.TemporaryDirectory(prefix="tiffin-bento-") as context:
            options = bento_options(BENTOFILE, meta, str(model.tag), name or TASKS[meta["task"]].bento_model, gpu,
                                    Path(context))
            # BentoML reads the wheels only from under the working directory
            here = os.getcwd()
            os.chdir(context)
            try:
                bento = bentoml.bentos.build(**options)
            finally:
                os.chdir(here)
    except BaseException:
        bentoml.models.delete(model.tag)  # no orphan model in the store for a bento that was not built
        raise
    return str(bento.tag), Path(bento.path) / "env" / "docker" / "Dockerfile"
