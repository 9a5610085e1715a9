"""`tiffin serve` and `tiffin build` as Python functions.

serve: starts `bentoml serve` on the task's service with TIFFIN_ARTIFACT pointing at the folder.
build: stores the artifact as a BentoML model, writes tiffin's torch-free serving wheel
(tiffin.serve.wheel) into a fresh build context, and builds a bento from bentofile.yaml (shipped
inside the package, so this works from an installed wheel as from a checkout) with the task's
service and that model filled in.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tiffin.serve.served_model import onnx_artifact
from tiffin.errors import TiffinError
from tiffin.tasks import TASKS

# the bento's build config, inside the package (a link to the repository's bentofile.yaml)
BENTOFILE = Path(__file__).resolve().parent / "bentofile.yaml"
# ONNX Runtime's CUDA build for `--gpu` bentos: its releases trail onnxruntime's (PyPI has no
# onnxruntime-gpu 1.32.0, the CPU pin; a GPU bento pinned to it failed to build), so it has its own pin
ONNXRUNTIME_GPU = "1.31.1"


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
    """Copy an artifact (tiffin.json + model file, its external weights file past 2 GB, the
    decoder's files) into the BentoML model store; the Model."""
    import bentoml

    meta = onnx_artifact(artifact)
    name = name or TASKS[meta["task"]].bento_model
    labels = {"task": meta["task"], "backbone": meta["backbone"].replace("/", "-"), "precision": meta["precision"]}
    try:
        # BentoML metadata takes plain values only: the full tiffin.json travels as a file
        metadata = {"task": meta["task"], "backbone": meta["backbone"], "sha256": meta["sha256"]}
        with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
            decoder = meta.get("decoder") or {}
            data = [meta["external_data"]["file"]] if meta.get("external_data") else []
            for file in ("tiffin.json", meta["model_file"], *data, *(decoder[k]["file"] for k in ("words", "lm")
                                                                     if decoder.get(k))):
                shutil.copy2(Path(artifact) / file, Path(model.path) / file)
    except bentoml.exceptions.InvalidArgument as exc:
        raise TiffinError(f"--name {name}: {exc}") from None
    return model


def bento_options(bentofile: Path, meta: dict[str, Any], model_tag: str, name: str, gpu: bool, context: Path,
                  base_image: str | None = None) -> dict[str, Any]:
    """bentoml.bentos.build arguments: bentofile.yaml with the artifact's service and model filled in
    (the model's tag travels as the bento argument `model`, which BentoML restores wherever the
    bento runs: `bentoml serve TAG` or its container), built from `context`, which holds the
    serving wheel, the bentofile and tiffin's Dockerfile template (the image's HEALTHCHECK).
    `base_image`: the image its Dockerfile builds on [default: the bentofile's, else BentoML's
    for its distro and Python]."""
    import yaml
    from bentoml._internal.bento.build_config import BentoEnvSchema

    from tiffin.serve.container import DOCKERFILE_TEMPLATE
    from tiffin.serve.wheel import serving_wheel

    config = yaml.safe_load(bentofile.read_text())
    shutil.copy2(bentofile, context / "bentofile.yaml")
    shutil.copy2(DOCKERFILE_TEMPLATE, context / DOCKERFILE_TEMPLATE.name)
    docker = {**(config.get("docker") or {}), "dockerfile_template": DOCKERFILE_TEMPLATE.name}
    if base_image:  # the venv is made with the base image's own Python (BentoML warns about distro/python_version)
        docker = {**{k: v for k, v in docker.items() if k not in ("distro", "python_version")}, "base_image": base_image}
    wheel = serving_wheel(context / "dist" / "serving")
    python = {**(config.get("python") or {}), "wheels": [str(wheel.relative_to(context))]}
    if meta.get("decoder"):  # beam search in the service: flashlight-text, at the tested version
        python["packages"] = [*python.get("packages", []), _pinned("flashlight-text")]
    from tiffin.runtimes import RUNTIMES, runtime_for

    # the runtime `tiffin benchmark --record` chose; its row says what a bento installs to run it
    runtime = RUNTIMES[meta["runtime"]] if meta.get("runtime") else None
    if runtime is not None and runtime.bento is None:
        raise TiffinError(f"this artifact records runtime {runtime.name}, which bentos do not bundle yet: remove "
                          "\"runtime\" from its tiffin.json (ONNX Runtime; CUDA with --gpu)")
    default = runtime_for("onnx").bento  # the package of the default row, which the bentofile lists
    if runtime is not None and runtime.bento != default:
        if gpu:
            raise TiffinError(f"--gpu: this artifact records runtime {runtime.name} ({runtime.device.upper()}); a "
                              "GPU bento runs ONNX Runtime CUDA: remove \"runtime\" from its tiffin.json, or build "
                              "without --gpu")
        python["packages"] = [*(p for p in python.get("packages", []) if not p.startswith(default)),
                              _pinned(runtime.bento)]
    if gpu:  # the CUDA build of ONNX Runtime, with CUDA and cuDNN from pip (no CUDA base image needed)
        python["packages"] = [p if not p.startswith("onnxruntime") else f"onnxruntime-gpu[cuda,cudnn]=={ONNXRUNTIME_GPU}"
                              for p in python.get("packages", [])]
    return {
        "service": TASKS[meta["task"]].service, "name": name, "description": config.get("description"),
        "labels": {**(config.get("labels") or {}), "task": meta["task"], "backbone": meta["backbone"].replace("/", "-"),
                   "precision": meta["precision"], "device": "gpu" if gpu else "cpu"},
        "include": config.get("include"), "exclude": config.get("exclude"), "python": python,
        "docker": docker, "models": [model_tag],
        "args": {"model": model_tag}, "build_ctx": str(context),
        # a GPU bento's model service declares its GPU (bento.yaml records it; read again at serve time)
        **({"envs": [BentoEnvSchema(name="TIFFIN_GPUS", value="1")]} if gpu else {}),
    }


def _pinned(package: str) -> str:
    """`package==VERSION` at the version installed here (the one the tests ran)."""
    from importlib.metadata import version

    return f"{package}=={version(package)}"


def default_base_image(bentofile: Path = BENTOFILE) -> str:
    """The base image a bento of `bentofile` builds on: its docker.base_image, else BentoML's
    image for its distro and Python (python:3.11-slim for debian)."""
    import yaml
    from bentoml._internal.bento.build_config import CondaOptions, DockerOptions
    from bentoml._internal.container.frontend.dockerfile import DistroSpec

    docker = DockerOptions(**(yaml.safe_load(bentofile.read_text()).get("docker") or {})).with_defaults()
    if docker.base_image:
        return docker.base_image
    return DistroSpec.from_options(docker, CondaOptions()).image.format(spec_version=docker.python_version)


class _KnownFallback(logging.Filter):
    """BentoML's bentos of format v2 take no Dockerfile template, so a bento with tiffin's (the
    image's HEALTHCHECK) is built as v1, which serves the same; BentoML warns on every build."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "dockerfile_template is not supported by bento v2" not in record.getMessage()


_KNOWN_FALLBACK = _KnownFallback()


def build(artifact: Path, name: str | None = None, gpu: bool = False, base_image: str | None = None) -> tuple[str, Path]:
    """Store the artifact, build the bento; (bento tag, path of its Dockerfile)."""
    import bentoml

    logging.getLogger("bentoml.build").addFilter(_KNOWN_FALLBACK)  # once: the same filter is not added twice
    if not BENTOFILE.is_file():
        raise TiffinError(f"{BENTOFILE}: missing from this tiffin installation; reinstall tiffin[serve]")
    if shutil.which("uv") is None and importlib.util.find_spec("uv") is None:
        raise TiffinError("bentoml build needs uv: pip install uv (or install tiffin[serve])")
    meta = onnx_artifact(artifact)
    model = store_model(artifact, name)
    try:
        with tempfile.TemporaryDirectory(prefix="tiffin-bento-") as context:
            options = bento_options(BENTOFILE, meta, str(model.tag), name or TASKS[meta["task"]].bento_model, gpu,
                                    Path(context), base_image)
            # BentoML reads the wheels only from under the working directory, and the services'
            # settings (TIFFIN_GPUS) from this process's environment when it imports them
            here, saved = os.getcwd(), dict(os.environ)
            os.chdir(context)
            os.environ.update({env.name: env.value for env in options.get("envs", [])})
            try:
                bento = bentoml.bentos.build(**options)
            finally:
                os.chdir(here)
                os.environ.clear()
                os.environ.update(saved)
    except BaseException:
        bentoml.models.delete(model.tag)  # no orphan model in the store for a bento that was not built
        raise
    return str(bento.tag), Path(bento.path) / "env" / "docker" / "Dockerfile"


def build_image(artifact: Path, name: str | None = None, gpu: bool = False, base_image: str | None = None,
                image_tag: str | None = None) -> tuple[str, dict[str, Any]]:
    """`build`, then the bento's Docker image (tiffin.serve.container); (bento tag, image facts).
    The engine and the base image are checked first: nothing is stored for an image that
    cannot be built here."""
    from tiffin.serve import container

    container.engine_version()
    container.ensure_base_image(base_image or default_base_image())
    tag, _ = build(artifact, name, gpu, base_image)
    return tag, container.containerize(tag, image_tag or tag, gpu)
