"""tiffin's checkpoints: read without running code, written atomically, resumed at their epoch.

A checkpoint is Lightning's, with a `tiffin` entry (task, backbone, spec) that makes it
self-describing: `tiffin predict`, `tiffin export` and `tiffin.load` rebuild the network from
it alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from tiffin.errors import TiffinError


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a tiffin checkpoint with `weights_only=True`: no code in the file runs.

    Raises:
        TiffinError: missing, corrupt, not a tiffin checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise TiffinError(f"{path}: no such checkpoint; give a .ckpt written by `tiffin train`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, corrupt or pickled files
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise TiffinError(f"{path}: not a readable checkpoint ({reason}); give a .ckpt written by `tiffin train` "
                          "or Trainer.save_checkpoint") from None
    if not isinstance(checkpoint, dict) or "tiffin" not in checkpoint or "state_dict" not in checkpoint:
        raise TiffinError(f"{path}: not a tiffin checkpoint; give a .ckpt written by `tiffin train`")
    return checkpoint


def resumed_epoch(checkpoint: dict[str, Any]) -> int:
    """The epoch a run resumed from `checkpoint` starts with. Samplers are built with it: Lightning
    primes a loader's first iterator before any epoch hook can set the epoch."""
    return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside the target, then renamed over it.

    Lightning 2.6 writes through an fsspec transaction: a temporary file in the system temp
    folder, then a move. When that folder is on another filesystem (a tmpfs /tmp, containers)
    the move is a copy into the target, and a run killed mid-copy leaves a truncated last.ckpt
    and nothing to resume from. A rename within the run folder is atomic: the previous
    checkpoint stays whole until the new one is complete.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        for stale in path.parent.glob(f".{path.name}.partial-*"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def same_classes(checkpoint: dict[str, Any], key: str, mine: Any, what: str) -> None:
    """Refuse to load weights trained for other outputs (`key`: the spec's "labels" or "vocab")
    than the model's: resuming with other data would otherwise train on misnamed classes.

    Raises:
        TiffinError: the checkpoint's spec lists other `what` than `mine`.
    """
    saved = (checkpoint.get("tiffin") or {}).get("spec", {}).get(key)
    if saved is not None and list(saved) != list(mine):
        raise TiffinError(f"the checkpoint was trained with other {what} ({len(saved)}: {list(saved)[:8]}) than the "
                          f"model's ({len(mine)}: {list(mine)[:8]}); resume with the data and options it was trained with")
