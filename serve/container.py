"""Bentos built into Docker images: `tiffin build ARTIFACT --containerize`.

The image is BentoML's: `bentoml.container.build` renders the bento's own Dockerfile (BentoML's
templates plus tiffin's Dockerfile.template, which adds a HEALTHCHECK) in BentoML's build
context. tiffin adds what BentoML leaves to the machine:

- the base image: the bento's `docker.base_image` (`--base-image`), else BentoML's default for
  its distro and Python (python:3.11-slim), checked before anything is built: a base that is
  neither here nor pullable is one line saying how to give one;
- a base image made from Debian's own packages for machines no registry reaches
  (`debian_base_image`, `python -m tiffin.serve.container base-image`, `make base-image`):
  debootstrap, python3 + pip + venv, the host's own extra CA certificates (a TLS-intercepting
  proxy that the host trusts is trusted inside the build too);
- the builder: BentoML asks Docker for BuildKit, which Docker's CLI from 23 on runs only through
  the buildx plugin; where buildx is missing (Debian 12 packages none) the classic builder builds
  the same Dockerfile.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tiffin.errors import TiffinError

# tiffin's part of every bento's Dockerfile (shipped in the package beside bentofile.yaml)
DOCKERFILE_TEMPLATE = Path(__file__).resolve().parent / "Dockerfile.template"
# the image `make base-image` makes when none can be pulled; Debian 12's python3 is 3.11, the
# bentofile's python_version
LOCAL_BASE_IMAGE = "tiffin-python:3.11-bookworm"
DEBIAN_SUITE, DEBIAN_MIRROR = "bookworm", "http://deb.debian.org/debian"
PULL_TIMEOUT_S = 300
HOW_TO_GET_DOCKER = ("install Docker (Debian: apt-get install docker.io) and start its daemon (dockerd, or "
                     "systemctl start docker); `make container` does both as root")


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """`docker ARGS`, output captured; a missing client or a stopped engine is one line."""
    client = shutil.which("docker")
    if client is None:
        raise TiffinError(f"--containerize: no docker command here: {HOW_TO_GET_DOCKER}")
    try:
        done = subprocess.run([client, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TiffinError(f"docker {' '.join(args[:2])}: no answer in {timeout:.0f} s") from None
    if check and done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if "Cannot connect to the Docker daemon" in done.stderr or "docker.sock" in done.stderr:
            raise TiffinError(f"--containerize: the Docker engine is not running ({last}): {HOW_TO_GET_DOCKER}")
        raise TiffinError(f"docker {' '.join(args[:2])}: {last}")
    return done


def engine_version() -> str:
    """The Docker engine's version (raises the one-line error when there is none)."""
    return docker("version", "--format", "{{.Server.Version}}").stdout.strip()


def have_image(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


def ensure_base_image(image: str) -> None:
    """`image` is here, or pulled now; else the one line that says how to give a base image."""
    if have_image(image):
        return
    pulled = docker("pull", "-q", image, timeout=PULL_TIMEOUT_S, check=False)
    if pulled.returncode != 0:
        reason = (pulled.stderr.strip().splitlines() or ["no output"])[-1]
        raise TiffinError(
            f"--base-image {image}: not here and it cannot be pulled ({reason}); give an image with Python 3.11 and "
            f"pip that this machine has (--base-image IMAGE), or make one from Debian's packages: "
            f"`python -m tiffin.serve.container base-image` (root, debootstrap; `make base-image`), then "
            f"--base-image {LOCAL_BASE_IMAGE}")


def builder_env() -> dict[str, str]:
    """The environment BentoML's docker backend builds in: the classic builder where the CLI has no
    buildx (BentoML turns BuildKit on, and the CLI refuses BuildKit without buildx)."""
    env = dict(os.environ)
    if "DOCKER_BUILDKIT" not in env and docker("buildx", "version", check=False).returncode != 0:
        env["DOCKER_BUILDKIT"] = "0"
    return env


def containerize(bento_tag: str, image_tag: str, gpu: bool = False) -> dict:
    """Build the bento's image with BentoML; {"image", "id", "size_mb", "run"} (`gpu`: the run
    line passes the host's GPUs, and with them the NVIDIA driver, into the container)."""
    import bentoml

    env = builder_env()
    saved = dict(os.environ)
    here = os.getcwd()
    # BentoML logs Docker's build output at INFO: shown, as the build's progress and its reason when it fails
    build_log = logging.getLogger("bentoml._internal.container")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    build_log.addHandler(handler)
    level, propagate = build_log.level, build_log.propagate
    build_log.setLevel(logging.INFO)
    build_log.propagate = False  # once, not again through a handler the root logger may have
    try:
        os.environ.update(env)
        # BentoML reads the bento's Dockerfile template from a temporary copy of the bento and
        # refuses a template outside the working directory: work from the temporary folder's parent
        os.chdir(tempfile.gettempdir())
        # BentoML logs a failed build and returns None; its log says why, and the check below says so
        built = bentoml.container.build(bento_tag, backend="docker", image_tag=(image_tag,))
    finally:
        build_log.removeHandler(handler)
        build_log.setLevel(level)
        build_log.propagate = propagate
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)
    if built is None or not have_image(image_tag):
        raise TiffinError(f"bentoml containerize {bento_tag}: the image was not built (Docker's output is above)")
    info = json.loads(docker("image", "inspect", image_tag).stdout)[0]
    return {"image": image_tag, "id": info["Id"], "size_mb": round(info["Size"] / 2**20, 1),
            "run": f"docker run --rm{' --gpus all' if gpu else ''} -p 3000:3000 --stop-timeout 60 {image_tag}"}


def debian_base_image(tag: str = LOCAL_BASE_IMAGE, suite: str = DEBIAN_SUITE, mirror: str = DEBIAN_MIRROR) -> dict:
    """A Python base image from Debian's packages, imported into Docker as `tag` (about a
    minute): debootstrap's minimal system plus python3, pip and venv, with this host's extra CA
    certificates (/usr/local/share/ca-certificates). Needs root and debootstrap."""
    if os.geteuid() != 0:
        raise TiffinError("base-image: debootstrap needs root; run it as root (or give --base-image an image you have)")
    if shutil.which("debootstrap") is None:
        raise TiffinError("base-image: needs debootstrap: apt-get install debootstrap")
    engine_version()
    with tempfile.TemporaryDirectory(prefix="tiffin-rootfs-") as work:
        root = Path(work) / "rootfs"
        strap = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-pip,python3-venv,"
                                "ca-certificates", suite, str(root), mirror], capture_output=True, text=True)
        if strap.returncode != 0:
            last = (strap.stdout.strip().splitlines() or ["no output"])[-1]
            raise TiffinError(f"base-image: debootstrap {suite} {mirror} failed: {last}")
        extra = Path("/usr/local/share/ca-certificates")
        if extra.is_dir() and any(extra.glob("*.crt")):
            for cert in extra.glob("*.crt"):
                shutil.copy2(cert, root / "usr/local/share/ca-certificates" / cert.name)
            subprocess.run(["chroot", str(root), "update-ca-certificates"], capture_output=True, check=True)
        # the image is a build base: pip may install into it (BentoML installs uv with pip)
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        for cache in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(root / cache, ignore_errors=True)
        changes = ["ENV LANG=C.UTF-8",
                   # pip and uv verify TLS against the system bundle, the one holding the host's CAs
                   "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "ENV UV_NATIVE_TLS=1",
                   'CMD ["python3"]']
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", *(f"--change={c}" for c in changes), "-", tag],
                                  stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if imported.returncode != 0:
            raise TiffinError(f"base-image: docker import failed: {imported.stderr.strip()}")
    info = json.loads(docker("image", "inspect", tag).stdout)[0]
    return {"image": tag, "size_mb": round(info["Size"] / 2**20, 1)}


def base_image(tag: str | None = None) -> str:
    """The base image to build on: `tag` (made from Debian's packages unless it is here); without
    one, BentoML's default base when it is here or can be pulled, else LOCAL_BASE_IMAGE, made if missing."""
    from tiffin.serve.commands import default_base_image

    if tag is None:
        try:
            ensure_base_image(default_base_image())
            return default_base_image()
        except TiffinError as err:
            if "cannot be pulled" not in str(err):
                raise
            tag = LOCAL_BASE_IMAGE
            print(f"{default_base_image()} cannot be pulled here: {tag} from Debian's packages", file=sys.stderr)
    if not have_image(tag):
        made = debian_base_image(tag)
        print(f"{tag}: {made['size_mb']:.0f} MB, Python from Debian {DEBIAN_SUITE}", file=sys.stderr)
    return tag


def main(argv: list[str]) -> int:
    """`python -m tiffin.serve.container base-image [TAG]`: prints the base image to build on (last line)."""
    if not argv or argv[0] != "base-image" or len(argv) > 2:
        print("usage: python -m tiffin.serve.container base-image [TAG]", file=sys.stderr)
        return 2
    try:
        print(base_image(argv[1] if len(argv) > 1 else None))
    except TiffinError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
