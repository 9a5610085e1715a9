"""What tiffin refuses in a Hugging Face model folder (a download or a save_pretrained folder),
for every family, before transformers reads it: weights only as pickles (unpickling runs code)
and configs that name model code of their own (what trust_remote_code would run)."""

from __future__ import annotations

import json
from pathlib import Path

from tiffin.errors import TiffinError


def refuse_foreign_files(folder: Path, backbone: str, pretrained: bool = True) -> None:
    """Both checks below; the weights one only when the weights will be read."""
    refuse_remote_code(folder, backbone)
    if pretrained:
        refuse_pickled_weights(folder, backbone)


def refuse_pickled_weights(folder: Path, backbone: str) -> None:
    """Refuse a model folder whose weights are only pickles (pytorch_model.bin and its shards):
    unpickling runs whatever the file names, and torch's weights-only guard turns a hostile one
    into a traceback at best. tiffin reads weights from safetensors only, which hold tensors and
    nothing else.

    Raises:
        TiffinError: no *.safetensors file, but pickled weights.
    """
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
    if pickled:
        raise TiffinError(f"--backbone {backbone}: {folder / pickled[0]} holds pickled weights, which tiffin does "
                          "not load (unpickling runs code); convert them to safetensors where you trust the file "
                          "(AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)) "
                          "and remove the .bin")


def refuse_remote_code(folder: Path, backbone: str) -> None:
    """Refuse a model folder (or Hub snapshot) whose config.json names code of its own (`auto_map`,
    what transformers runs under trust_remote_code). tiffin builds transformers' own classes and
    never passes trust_remote_code, so such a model could only load as something other than
    what its maker wrote; and its code is a program no signature vouches for.

    Raises:
        TiffinError: the config names custom code.
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers reports an unreadable config itself, with the file's name
    if isinstance(config, dict) and config.get("auto_map"):
        raise TiffinError(f"--backbone {backbone}: {folder / 'config.json'} names model code of its own (auto_map), "
                          "which only loads with trust_remote_code, and tiffin runs no model folder's code; "
                          "give a model that transformers' own classes load (its save_pretrained folder)")
