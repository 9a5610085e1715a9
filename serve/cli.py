"""CLI of the serving stage: `tiffin serve` and `tiffin build` (BentoML imported inside the commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from tiffin.errors import reported


@reported
def serve_command(
    artifact: Path = typer.Argument(..., help="An ONNX artifact folder written by `tiffin export`."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(3000, min=1, max=65535),
    workers: int = typer.Option(1, min=1, envvar="TIFFIN_WORKERS",
                                help="API workers (they decode uploads); the model runs in one more "
                                     "(with --no-batching, in each)."),
    device: str = typer.Option("auto", envvar="TIFFIN_DEVICE", help="auto | cpu | cuda: ONNX Runtime provider."),
    runtime: str = typer.Option("", envvar="TIFFIN_RUNTIME", help="onnxruntime | openvino [default: the one the "
                                "artifact's tiffin.json records (tiffin benchmark --record), else onnxruntime]."),
    batching: bool = typer.Option(True, envvar="TIFFIN_BATCHING",
                                  help="Adaptive batching of model calls across requests, in a model worker; "
                                       "off: the model runs in the API worker (no hop between processes)."),
    max_upload_mb: float = typer.Option(100, min=0.001, envvar="TIFFIN_MAX_UPLOAD_MB",
                                        help="Largest upload accepted (413 above)."),
) -> None:
    """Serve an artifact over HTTP with BentoML: POST /classify or /transcribe, /docs.json, /metrics.

    Every TIFFIN_* variable of the README's serving table applies; these options set the common ones.
    """
    from tiffin.serve.commands import serve

    settings = {"TIFFIN_DEVICE": device, "TIFFIN_BATCHING": "1" if batching else "0",
                "TIFFIN_MAX_UPLOAD_MB": str(max_upload_mb), "TIFFIN_RUNTIME": runtime}
    serve(artifact, host, port, workers, settings)


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
