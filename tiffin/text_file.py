"""The text files users hand tiffin (word lists, LM corpora, sentences to speak): their lines,
or a one-line error naming the option and the file. Torch-free."""

from __future__ import annotations

from pathlib import Path

from tiffin.errors import TiffinError


def read_lines(path: str | Path, option: str, wanted: str) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark dropped, any line ending); `wanted` says
    what the file should hold ("one word a line").

    Raises:
        TiffinError: missing, or not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise TiffinError(f"{option} {path}: no such file; give a text file with {wanted}")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise TiffinError(f"{option} {path}: is not UTF-8 text; save it as UTF-8") from None
