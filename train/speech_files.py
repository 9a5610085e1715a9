"""Finding and checking the recordings of a speech dataset, torch-free: CSV/TSV and JSON lines
(folders in the published corpora's layouts: train/speech_layouts.py).

Every row is checked before training (audio readable, non-empty, finite; transcript non-empty
after normalisation) and bad ones are reported with their row and path. `tiffin evaluate` reads
data this way too, where torch may not be installed; the torch `Dataset`, bucketing sampler and
collation are train/speech_data.py.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiffin.audio_io import audio_truncation, read_audio
from tiffin.ctc import Normalised, Vocabulary
from tiffin.errors import MediaError, TiffinError
from tiffin.inference import output_frames
from tiffin.train.bad_files import CHUNK, BadFiles, all_bad_so_far, early_stop_message
from tiffin.train.table_io import open_table


@dataclass(frozen=True)
class Row:
    """One transcribed recording as the user listed it; `where` is e.g. 'train.csv line 7'."""

    path: Path
    text: str
    where: str
    error: str = ""  # a problem found while listing the row (an unreadable transcript file)
    start: float = 0.0  # the span of the recording this utterance is (a Kaldi segment), in seconds
    end: float | None = None


@dataclass(frozen=True)
class Utterance:
    """A checked row: normalised transcript, label ids and length in samples at the model rate."""

    path: Path
    text: str
    ids: tuple[int, ...]
    samples: int
    start: float = 0.0
    end: float | None = None


@dataclass(frozen=True)
class BadRow:
    where: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path}: {self.reason}"


def _resolve(base: Path, file: str) -> Path:
    path = Path(file).expanduser()
    return path if path.is_absolute() else base / path


# Common Voice's TSVs (train, dev, test, validated, other, ...): audio paths relative to clips/
COMMON_VOICE = {"audio_column": "path", "text_column": "sentence", "audio_folder": "clips"}
DEFAULT_COLUMNS = ("speech_files", "targets")


def is_common_voice_table(fields: list[str], folder: Path) -> bool:
    return {COMMON_VOICE["audio_column"], COMMON_VOICE["text_column"]} <= set(fields) and (
        folder / COMMON_VOICE["audio_folder"]).is_dir()


def read_table(path: str | Path, audio_column: str, text_column: str, option: str,
               audio_root: str | Path | None = None) -> list[Row]:
    """Rows of a CSV or TSV (delimiter sniffed; BOM, CRLF and a pandas index column tolerated).

    Audio paths are relative to `audio_root`, else to the table's folder; a Common Voice TSV
    (`path` and `sentence` columns, `clips/` beside it) is read as Common Voice lays it out:
    those columns, unless others were named, and the audio in clips/.

    Raises:
        TiffinError: missing file, not UTF-8, or a header without the named columns.
    """
    path, reader = open_table(path, option, f"a CSV or TSV with {audio_column},{text_column} columns")
    fields = [f for f in (reader.fieldnames or []) if f is not None]
    base = Path(audio_root).expanduser() if audio_root is not None else path.parent
    if is_common_voice_table(fields, path.parent):
        if (audio_column, text_column) == DEFAULT_COLUMNS:
            audio_column, text_column = COMMON_VOICE["audio_column"], COMMON_VOICE["text_column"]
        if audio_root is None and audio_column == COMMON_VOICE["audio_column"]:
            base = path.parent / COMMON_VOICE["audio_folder"]
    if audio_root is not None and not base.is_dir():
        raise TiffinError(f"--audio-root {base}: no such folder")
    for column, flag in ((audio_column, "--audio-column"), (text_column, "--text-column")):
        if column not in fields:
            raise TiffinError(f"{option} {path}: has no column {column!r} (found {fields}); name yours with {flag}")
    rows = []
    for row in reader:
        file, transcript = (row.get(audio_column) or "").strip(), row.get(text_column) or ""
        if not file and not transcript.strip():
            continue
        rows.append(Row(_resolve(base, file), transcript, f"{path.name} line {reader.line_num}"))
    return rows


def json_lines(path: Path, option: str) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSON-lines file.

    Raises:
        TiffinError: missing file, not UTF-8, or a line that is not JSON (naming `option` and the line).
    """
    if not path.is_file():
        raise TiffinError(f"{option} {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise TiffinError(f"{option} {path}: is not UTF-8 text; save it as UTF-8") from None
    values = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise TiffinError(f"{option} {path}: line {number} is not JSON ({exc.msg})") from None
    return values


def read_jsonl(path: str | Path, audio_column: str, text_column: str, option: str,
               audio_root: str | Path | None = None) -> list[Row]:
    """Rows of a JSON-lines file, one object per line with the named keys; audio paths relative to
    `audio_root`, else to the file's folder."""
    path = Path(path).expanduser()
    rows = []
    for number, obj in json_lines(path, option):
        if not isinstance(obj, dict) or audio_column not in obj or text_column not in obj:
            raise TiffinError(f"{option} {path}: line {number} lacks {audio_column!r} or {text_column!r}; "
                              "name yours with --audio-column/--text-column")
        base = Path(audio_root).expanduser() if audio_root is not None else path.parent
        rows.append(Row(_resolve(base, str(obj[audio_column])), str(obj[text_column]), f"{path.name} line {number}"))
    return rows


@dataclass
class CheckReport:
    """What checking the rows found besides the usable utterances."""

    bad: BadFiles  # the first rows kept, all counted
    punctuation: Counter
    unknown: Counter
    duplicates: int = 0  # rows naming a file an earlier row named with the same transcript, dropped


def check_rows(rows: list[Row], vocab: Vocabulary, sample_rate: int, strict: bool = False,
               conv: tuple[list[int], list[int]] | None = None, source: str | None = None
               ) -> tuple[list[Utterance], CheckReport]:
    """Decode every row's audio (threads) and normalise its transcript. With the model's conv
    `(kernels, strides)`, a recording too short for CTC to spell its transcript is a bad row.
    Rows are checked in chunks, in the order listed, and bad ones kept only as the first few and
    counts (tiffin.train.bad_files), so a table of a million wrong paths stops early and small;
    `source` names the rows in that error (default: the file of the first row).

    Raises:
        TiffinError: the first bad row, when `strict`; none of the first EARLY_STOP rows usable.
    """

    rows, duplicates = drop_duplicates(rows, vocab)

    def one(row: Row) -> tuple[Utterance, Normalised] | BadRow:
        if row.error:
            return BadRow(row.where, str(row.path), row.error)
        normalised = vocab.normalise(row.text)
        if not normalised.text:
            return BadRow(row.where, str(row.path), "empty transcript" if not row.text.strip()
                          else f"transcript {row.text.strip()[:40]!r} has no character of the vocabulary")
        try:
            wave, rate = read_audio(row.path, row.start, row.end)
        except MediaError as err:
            return BadRow(row.where, err.path, err.reason)
        cut = audio_truncation(row.path, len(wave) / rate) if (row.start, row.end) == (0.0, None) else None
        if cut:  # its transcript is of the whole recording: training on part of it would teach wrong words
            return BadRow(row.where, str(row.path), f"{cut}; the transcript is of the whole recording")
        utterance = Utterance(row.path, normalised.text, tuple(vocab.encode(normalised.text)),
                              int(np.ceil(len(wave) * sample_rate / rate)), row.start, row.end)
        if conv is not None:
            frames, needed = output_frames(utterance.samples, *conv), ctc_frames_needed(utterance.ids)
            if frames < needed:
                return BadRow(row.where, str(row.path), f"{len(wave) / rate:.2f} s is too short for its transcript "
                                                        f"({frames} frames for {needed} needed)")
        return utterance, normalised

    report = CheckReport(BadFiles(), Counter(), Counter(), duplicates)
    good = []
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        for at in range(0, len(rows), CHUNK):
            for r in pool.map(one, rows[at : at + CHUNK]):
                if isinstance(r, BadRow):
                    if strict:
                        raise TiffinError(f"{r} (--strict)")
                    report.bad.add(r)
                    continue
                utterance, normalised = r
                report.punctuation.update(normalised.punctuation)
                report.unknown.update(normalised.unknown)
                good.append(utterance)
            if all_bad_so_far(report.bad.total, len(good)):
                source = source or (rows[0].where.rsplit(" line ", 1)[0] if rows else "the rows")
                raise TiffinError(early_stop_message(source, report.bad, len(rows), "row"))
    return good, report


def drop_duplicates(rows: list[Row], vocab: Vocabulary) -> tuple[list[Row], int]:
    """Keep the first of rows naming the same file with the same transcript (after normalisation).

    Raises:
        TiffinError: the same file with two different transcripts.
    """
    first: dict[tuple, tuple[Row, str]] = {}  # (file, span) -> its first row and normalised transcript
    kept = []
    for row in rows:
        key, text = (row.path.resolve(), row.start, row.end), vocab.normalise(row.text).text
        if not text or row.error:
            kept.append(row)  # reported as a bad row by check_rows
        elif key not in first:
            first[key] = (row, text)
            kept.append(row)
        elif first[key][1] != text:
            raise TiffinError(f"{row.where}: {row.path} is listed before ({first[key][0].where}) with another "
                              "transcript; keep one")
    return kept, len(rows) - len(kept)


def ctc_frames_needed(ids: tuple[int, ...]) -> int:
    """Frames CTC needs to spell `ids`: one per label, plus a blank between repeated labels."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
