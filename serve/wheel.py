"""tiffin's torch-free serving wheel: the contract package and `tiffin.serve`, nothing else.

A bento installs tiffin the way every other environment has it, as the package `tiffin`
(imported as `tiffin.serve.video`, never as a loose `serve/` folder), but only the part that
serving runs: no `tiffin.train`, no `tiffin.export`, no CLI, no training API (tiffin.video,
tiffin.speech, tiffin.trainer: torch), no embedded weights. Every module it ships imports with
what a bento installs (`LEFT_OUT` says why each other one is left out; tests/test_imports.py
imports each, both ways). The wheel is written from the installed package's own files, so
`tiffin build` works the same from a source checkout and from an installed wheel.

Run: `python -m tiffin.serve.wheel OUT_DIR` (what `make bento` does before `bentoml build`).
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

# package -> {module file: why a bento cannot import it}: the wheel ships every other module of
# the contract and of tiffin.serve (a bento has neither torch nor typer, nor tiffin.train/.export)
LEFT_OUT: dict[str, dict[str, str]] = {
    "tiffin": {
        "cli.py": "the `tiffin` command: typer, and it wires tiffin.train and tiffin.export",
        "__main__.py": "`python -m tiffin`: the `tiffin` command",
        "trust_cli.py": "`tiffin trust`: typer",
        "video.py": "the training API (`from tiffin.video import VideoClassifier`): torch, Lightning, tiffin.train",
        "speech.py": "the training API (`from tiffin.speech import SpeechRecognition`): torch, Lightning, tiffin.train",
        "trainer.py": "the training API (`from tiffin import Trainer`): torch, Lightning, tiffin.train",
    },
    "tiffin.serve": {"cli.py": "`tiffin serve` and `tiffin build`: typer"},
}


def _files() -> list[tuple[str, Path]]:
    """(path inside the wheel, file on disk) for the contract modules and tiffin.serve, but LEFT_OUT."""
    from importlib import import_module

    files = []
    for package, left_out in LEFT_OUT.items():
        folder = Path(import_module(package).__file__).parent
        inside = package.replace(".", "/")
        files += [(f"{inside}/{p.name}", p) for p in sorted(folder.glob("*.py")) if p.name not in left_out]
    return files


def shipped_modules() -> list[str]:
    """The dotted names of the modules the wheel ships (`tiffin.host`, `tiffin.serve.video`, ...)."""
    return [name[: -len("/__init__.py")].replace("/", ".") if name.endswith("/__init__.py")
            else name[: -len(".py")].replace("/", ".") for name, _ in _files()]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def serving_wheel(out_dir: Path) -> Path:
    """Write tiffin-VERSION-py3-none-any.whl (serving part only) into `out_dir`; its path.

    The bento lists the packages the wheel needs (bentofile.yaml, pinned from constraints.txt),
    so the wheel itself declares none: one place says what a served model installs.
    """
    import tiffin

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    version = tiffin.__version__
    info = f"tiffin-{version}.dist-info"
    entries = [(name, path.read_bytes()) for name, path in _files()]
    entries.append((f"{info}/METADATA", (
        f"Metadata-Version: 2.1\nName: tiffin\nVersion: {version}\n"
        "Summary: tiffin's torch-free serving part: artifact reading, decoding, host inference, BentoML services\n"
    ).encode()))
    entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: tiffin.serve.wheel\n"
                                     b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    wheel = out_dir / f"tiffin-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            # a fixed date: the same sources give the same wheel, byte for byte
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED)
    return wheel


if __name__ == "__main__":
    print(serving_wheel(Path(sys.argv[1] if len(sys.argv) > 1 else "dist/serving")))
