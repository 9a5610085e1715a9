"""CLI of the serving stage: `tiffin serve` and `tiffin build` (BentoML imported inside the commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from tiffin.errors import reported
from tiffin.runtimes import runtime_for, serving_runtimes


@reported
def serve_command(
    artifact: Path = typer.Argument(..., help="An ONNX artifact folder written by `tiffin export`, or a model "
                                    "`tiffin predict` takes (a .ckpt, an embedded model such as tiffin/tiny-motion, a "
                                    "Hugging Face speech folder): exported to ONNX fp32 behind the parity gate into a "
                                    "temporary folder first, removed when the server stops (as model.serve() does)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(3000, min=0, max=65535, help="0: a free port (as serve(port=0) in Python)."),
    workers: int = typer.Option(1, min=1, envvar="TIFFIN_WORKERS",
                                help="API workers (they decode uploads); the model runs in one more "
                                     "(with --no-batching, in each)."),
    device: str = typer.Option("auto", envvar="TIFFIN_DEVICE", help="auto | cpu | cuda: ONNX Runtime provider."),
    runtime: str = typer.Option("", envvar="TIFFIN_RUNTIME", help=f"{' | '.join(r.name for r in serving_runtimes())} "
                                "[default: the one the artifact's tiffin.json records (tiffin benchmark --record), "
                                f"else {runtime_for('onnx').name}]."),
    batching: bool = typer.Option(True, envvar="TIFFIN_BATCHING",
                                  help="Adaptive batching of model calls across requests, in a model worker; "
                                       "off: the model runs in the API worker (no hop between processes)."),
    max_upload_mb: float = typer.Option(100, min=0.001, envvar="TIFFIN_MAX_UPLOAD_MB",
                                        help="Largest upload accepted (413 above)."),
) -> None:
    """Serve an artifact (or a model, exported to ONNX first) over HTTP with BentoML: POST /classify or
    /transcribe, /docs.json, /metrics.

    Every TIFFIN_* variable of the README's serving table applies; these options set the common ones.
    """
    from tiffin.api import is_pytorch_model
    from tiffin.serve.commands import serve
    from tiffin.serve.server import free_port

    settings = {"TIFFIN_DEVICE": device, "TIFFIN_BATCHING": "1" if batching else "0",
                "TIFFIN_MAX_UPLOAD_MB": str(max_upload_mb), "TIFFIN_RUNTIME": runtime}
    if is_pytorch_model(artifact):
        raise typer.Exit(serve_model(artifact, host, port, workers, settings))
    serve(artifact, host, free_port(host) if port == 0 else port, workers, settings)


def serve_model(model: Path, host: str, port: int, workers: int, settings: dict[str, str]) -> int:
    """`tiffin serve` of a PyTorch model: the Python API's door, `tiffin.load(model).serve(...)` (an
    ONNX fp32 export behind the parity gate, served as a child process), held in the foreground:
    its log is followed here and it is stopped on Ctrl-C or SIGTERM, its temporary export removed.
    Every temporary file of this command (export and log) lives in one folder of its own, removed
    when it ends however it ends. The exit status: 0 when stopped, the server's when it exits itself."""
    import shutil
    import signal
    import tempfile

    import psutil

    from tiffin.api import load

    def interrupt(signum, frame):
        raise KeyboardInterrupt  # SIGTERM (docker stop, a supervisor) unwinds as Ctrl-C does

    handlers = {name: signal.signal(name, interrupt) for name in (signal.SIGINT, signal.SIGTERM)}
    before = {child.pid for child in psutil.Process().children()}
    own, tempfile.tempdir = tempfile.tempdir, tempfile.mkdtemp(prefix="tiffin-serve-")
    folder, server, status = Path(tempfile.tempdir), None, 0
    try:
        server = load(model).serve(port=port, host=host, workers=workers, **settings)
        typer.echo(f"{model}: exported to ONNX fp32 in {server.cleanup[0]} (removed when the server stops); "
                   f"serving at {server.url}")
        status = _follow(server)
    except KeyboardInterrupt:
        pass
    finally:
        for name in handlers:  # a second Ctrl-C does not cut the stop short
            signal.signal(name, signal.SIG_IGN)
        if server is not None:
            server.stop()
        else:  # interrupted while the server started: end what start() left running
            _stop_groups([c for c in psutil.Process().children() if c.pid not in before])
        tempfile.tempdir = own
        shutil.rmtree(folder, ignore_errors=True)
        for name, handler in handlers.items():
            signal.signal(name, handler)
    return status


def _follow(server) -> int:
    """Copy the server's log here as it grows, until the server exits; its exit status."""
    import time

    with open(server.log, "rb") as log:
        while True:
            running = server.running()
            chunk = log.read()
            if chunk:
                typer.echo(chunk.decode(errors="replace"), nl=False)
            if not running:
                return server.process.returncode or 0
            time.sleep(0.2)


def _stop_groups(children: list, timeout: float = 30) -> None:
    """SIGTERM to the process group each of `children` (psutil processes) leads, as a server started
    by tiffin.serve.server.start does; SIGKILL after `timeout`."""
    import os
    import signal

    import psutil

    def signal_group(pid: int, signum: int) -> bool:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signum)
                return True
        except ProcessLookupError:
            pass
        return False

    leaders = [child for child in children if signal_group(child.pid, signal.SIGTERM)]
    _, alive = psutil.wait_procs(leaders, timeout=timeout)
    for child in alive:
        signal_group(child.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


@reported
def build_command(
    artifact: Path = typer.Argument(..., help="An ONNX artifact folder written by `tiffin export`."),
    name: str = typer.Option(None, help="Model and bento name [default: tiffin-video / tiffin-speech]."),
    gpu: bool = typer.Option(False, help="Bento with onnxruntime-gpu (CUDA and cuDNN from pip) instead of onnxruntime."),
    containerize: bool = typer.Option(False, help="Also build the bento's Docker image (bentoml containerize; "
                                                  "needs a running Docker engine)."),
    image_tag: str = typer.Option(None, help="Image tag [default: the bento's tag]."),
    base_image: str = typer.Option(None, envvar="TIFFIN_BASE_IMAGE",
                                   help="Image the bento's Dockerfile builds on, with Python 3.11 and pip [default: "
                                        "BentoML's python:3.11-slim]; `make base-image` makes one from Debian's packages."),
) -> None:
    """Store an artifact as a BentoML model and build a torch-free bento from bentofile.yaml (and its image)."""
    from tiffin.serve.commands import build, build_image

    if image_tag and not containerize:
        raise typer.BadParameter("is for the image: add --containerize", param_hint="--image-tag")
    if not containerize:
        tag, dockerfile = build(artifact, name, gpu, base_image)
        typer.echo(f"bento {tag}\nDockerfile {dockerfile}\nimage: the same command with --containerize "
                   f"(or bentoml containerize {tag})")
        return
    tag, image = build_image(artifact, name, gpu, base_image, image_tag)
    typer.echo(f"bento {tag}\nimage {image['image']} ({image['size_mb']:.0f} MB)\nrun: {image['run']}")
