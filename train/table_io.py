"""Reading the CSV/TSV files users list their data in: one forgiving reader for every recipe."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tiffin.errors import TiffinError


def open_table(path: str | Path, option: str, what: str) -> tuple[Path, csv.DictReader]:
    """A DictReader over a UTF-8 CSV or TSV (delimiter sniffed from the header; BOM, CRLF and
    quoted newlines are fine). `what` tells the user what the file should hold.

    Raises:
        TiffinError: the file is missing or not UTF-8.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TiffinError(f"{option} {path}: no such file; give {what}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise TiffinError(f"{option} {path}: is not UTF-8 text; save it as UTF-8") from None
    header = text.split("\n", 1)[0]
    delimiter = "\t" if header.count("\t") > header.count(",") else ","
    return path, csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
