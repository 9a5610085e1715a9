"""The artifact folder on disk: where an export goes by default, what `--force` may replace,
and how a finished export replaces the old folder so that a complete artifact, old or new, is
there at every moment (built in a `.NAME.partial-PID` folder beside it, swapped in at the end).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tiffin.artifact_formats import MODEL_FILES
from tiffin.artifact_json import META_FILE
from tiffin.errors import TiffinError
from tiffin.train.backbones import EMBEDDED_MODELS


def default_out(model: Path, format: str, precision: str) -> Path:
    """runs/NAME/export/FORMAT-PRECISION for a checkpoint in runs/NAME/checkpoints/; DIR-FORMAT-PRECISION for a
    folder; runs/SHORT-NAME/export/FORMAT-PRECISION for an embedded model."""
    if str(model) in EMBEDDED_MODELS:
        return Path("runs") / str(model).split("/")[1] / "export" / f"{format}-{precision}"
    model = model.resolve()
    if model.is_dir():
        return model.parent / f"{model.name}-{format}-{precision}"
    return model.parent.parent / "export" / f"{format}-{precision}"


def artifact_file_names() -> frozenset[str]:
    """Every name an export writes into an artifact folder: a format's model file and external
    weights file (ONNX past 2 GB), tiffin.json, the decoder's word list and LM, the signature."""
    from tiffin.artifact_formats import EXTERNAL_DATA_FILES
    from tiffin.ctc_beam import DECODER_FILES
    from tiffin.signing import SIGNATURE_FILE

    return frozenset(set(MODEL_FILES.values()) | set(EXTERNAL_DATA_FILES.values()) | set(DECODER_FILES.values())
                     | {META_FILE, SIGNATURE_FILE})


def check_replaceable(out: Path) -> None:
    """Refuse to let --force replace what is not an artifact: `out` must be an empty folder, or
    one holding tiffin.json and only regular files an export writes. --force once removed a
    folder holding a thesis; whatever else is there is the user's, and stays.

    Raises:
        TiffinError: naming --out and what is in the way; nothing was removed.
    """
    keep = ("--force replaces only an artifact folder or an empty one; nothing was removed: move it or give "
            "another --out")
    if out.is_symlink() or not out.is_dir():
        kind = "a symbolic link" if out.is_symlink() else "a file, not a folder"
        raise TiffinError(f"--out {out}: is {kind}; {keep}")
    names = artifact_file_names()
    entries = sorted(os.scandir(out), key=lambda e: e.name)
    for entry in entries:
        if entry.name not in names or not entry.is_file(follow_symlinks=False):
            what = "a folder" if entry.is_dir(follow_symlinks=False) else "a file"
            raise TiffinError(f"--out {out}: holds {entry.name!r}, {what} no export writes; {keep}")
    if entries and not (out / META_FILE).is_file():
        raise TiffinError(f"--out {out}: has no tiffin.json, so it is not an artifact; {keep}")


def partial_folder(out: Path) -> Path:
    """A new, empty folder beside `out` to build its artifact in (what killed exports of `out`
    left there is removed first)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def move_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp` so that a complete artifact, old or new, is at `out` at every moment:
    an atomic exchange of the two folders where the system has one (Linux), else two renames."""
    if out.exists() and _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old artifact
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2 with RENAME_EXCHANGE); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def remove_stale_partials(out: Path) -> None:
    """Remove what exports of `out` killed midway left beside it (their process is gone)."""
    for leftover in out.parent.glob(f".{out.name}.partial-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and Path("/proc/self").exists():
            shutil.rmtree(leftover, ignore_errors=True)
