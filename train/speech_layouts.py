"""Speech corpora read as their distributions lay them out, torch-free, with their own splits.

| layout | how it is recognised | splits |
|---|---|---|
| Common Voice | `clips/` and `train.tsv` or `validated.tsv` | train (else validated), dev, test TSVs |
| AudioFolder (Hugging Face) | `metadata.csv`/`.jsonl` with `file_name`, in the folder or per split | split subfolders, or a split folder as the path's first part |
| Kaldi data directory | `wav.scp` + `text` (+ `segments`), in the folder or per split | split subfolders (`train`, `dev`, `test_clean`, ...) |
| LibriSpeech (LibriTTS-style) | `*.trans.txt` files | split subfolders (`train-clean-100`, `dev-clean`, ...) |
| audio + .txt | audio files with a transcript `.txt` beside each | none |

A layout is a row of LAYOUTS: a test that recognises it and a reader giving rows per split
("train", "validation", "test"). Splits are used only when the folder holds a train split;
otherwise the whole folder is the train split (`--train-folder LibriSpeech/dev-clean` trains
on dev-clean). Rows that cannot be used (a listed utterance with no audio, no transcript) are
kept with their `error`, so they are reported and counted, never silently dropped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tiffin.audio_io import is_audio_file
from tiffin.errors import TiffinError
from tiffin.train.speech_files import COMMON_VOICE, DEFAULT_COLUMNS, Row, read_jsonl, read_table

SPLITS = ("train", "validation", "test")
# a split folder's or file's name (before any -clean-100 / _other suffix) -> the split it is
_SPLIT_NAMES = {"train": "train", "dev": "validation", "validation": "validation", "valid": "validation",
                "val": "validation", "eval": "validation", "test": "test"}


def split_named(name: str) -> str | None:
    """The split a folder name says: `dev-clean` and `dev_clean` -> validation, `train-other-500` -> train."""
    return _SPLIT_NAMES.get(re.split(r"[-_.]", name.lower(), maxsplit=1)[0])


@dataclass
class FolderRead:
    """A speech folder as its layout splits it (`splits` has "train" and any of the others)."""

    layout: str
    splits: dict[str, list[Row]]

    def counts(self) -> str:
        return ", ".join(f"{split} {len(rows)}" for split, rows in self.splits.items())


def _split_folders(root: Path, holds: Callable[[Path], bool]) -> dict[str, list[Path]]:
    """Subfolders of `root` named as splits that `holds` recognises, grouped by split."""
    found: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        split = split_named(sub.name)
        if split is not None and holds(sub):
            found.setdefault(split, []).append(sub)
    return found


def _by_split(root: Path, holds: Callable[[Path], bool], read: Callable[[Path], list[Row]]) -> dict[str, list[Row]]:
    """Rows per split from split subfolders when there is a train one, else the folder itself as train."""
    if holds(root):
        return {"train": read(root)}
    folders = _split_folders(root, holds)
    if "train" not in folders:  # only dev/test folders: all of them is what there is to train on
        return {"train": [row for group in folders.values() for folder in group for row in read(folder)]}
    return {split: [row for folder in folders[split] for row in read(folder)] for split in SPLITS if split in folders}


# --- Common Voice -------------------------------------------------------------------------------

def _is_common_voice(root: Path) -> bool:
    return (root / COMMON_VOICE["audio_folder"]).is_dir() and any(
        (root / f"{s}.tsv").is_file() for s in ("train", "validated"))


def read_common_voice(root: Path, option: str, audio_root: Path | None = None) -> dict[str, list[Row]]:
    """train.tsv (else validated.tsv), dev.tsv and test.tsv, audio from clips/."""
    tables = {"train": next(root / f"{s}.tsv" for s in ("train", "validated") if (root / f"{s}.tsv").is_file()),
              "validation": root / "dev.tsv", "test": root / "test.tsv"}
    return {split: read_table(table, *DEFAULT_COLUMNS, f"{option} {root}:", audio_root)
            for split, table in tables.items() if table.is_file()}


# --- Hugging Face AudioFolder -------------------------------------------------------------------

_METADATA = ("metadata.csv", "metadata.jsonl", "metadata.tsv")
_TRANSCRIPT_COLUMNS = ("transcription", "sentence", "text", "transcript", "normalized_text", "targets")


def _metadata(folder: Path) -> Path | None:
    return next((folder / name for name in _METADATA if (folder / name).is_file()), None)


def _columns(metadata: Path, option: str) -> list[str]:
    if metadata.suffix == ".jsonl":
        first = next((line for line in metadata.read_text(encoding="utf-8-sig").splitlines() if line.strip()), "{}")
        try:
            return list(json.loads(first))
        except (json.JSONDecodeError, TypeError):
            raise TiffinError(f"{option} {metadata}: line 1 is not a JSON object") from None
    header = metadata.read_text(encoding="utf-8-sig").split("\n", 1)[0].strip()
    return [c.strip() for c in header.split("\t" if header.count("\t") > header.count(",") else ",")]


def read_metadata(metadata: Path, option: str, audio_root: Path | None = None) -> list[Row]:
    """An AudioFolder metadata file: `file_name` (or `*_file_name`) and a transcript column
    (transcription, sentence, text, transcript, normalized_text)."""
    fields = _columns(metadata, option)
    audio = next((c for c in fields if c == "file_name" or c.endswith("_file_name")), None)
    text = next((c for c in _TRANSCRIPT_COLUMNS if c in fields), None)
    if audio is None or text is None:
        raise TiffinError(f"{option} {metadata}: an AudioFolder metadata file needs a file_name column and a "
                          f"transcript column ({', '.join(_TRANSCRIPT_COLUMNS)}); found {fields}")
    reader = read_jsonl if metadata.suffix == ".jsonl" else read_table
    return reader(metadata, audio, text, option, audio_root)


def _is_audiofolder(root: Path) -> bool:
    return _metadata(root) is not None or bool(_split_folders(root, lambda p: _metadata(p) is not None))


def read_audiofolder(root: Path, option: str, audio_root: Path | None = None) -> dict[str, list[Row]]:
    """Split subfolders each with its metadata, or one metadata whose paths start with a split folder."""
    top = _metadata(root)
    if top is None:
        return _by_split(root, lambda p: _metadata(p) is not None,
                         lambda folder: read_metadata(_metadata(folder), option, audio_root))
    rows = read_metadata(top, option, audio_root)
    splits: dict[str, list[Row]] = {}
    for row in rows:
        first = row.path.relative_to(root).parts[0] if row.path.is_relative_to(root) else ""
        splits.setdefault(split_named(first) or "train", []).append(row)
    return splits if "train" in splits else {"train": rows}


# --- Kaldi data directories ---------------------------------------------------------------------

def _kaldi_table(path: Path, option: str) -> list[tuple[int, str, str]]:
    """(line number, key, rest) of a Kaldi table file (`KEY VALUE...` lines)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise TiffinError(f"{option} {path}: is not UTF-8 text") from None
    out = []
    for number, line in enumerate(lines, 1):
        key, _, rest = line.strip().partition(" ")
        if key:
            out.append((number, key, rest.strip()))
    return out


def _is_kaldi(root: Path) -> bool:
    holds = lambda p: (p / "wav.scp").is_file() and (p / "text").is_file()  # noqa: E731
    return holds(root) or bool(_split_folders(root, holds))


def _kaldi_recordings(folder: Path, option: str, audio_root: Path | None) -> dict[str, Path]:
    """wav.scp's recordings; piped commands and archive offsets are refused (tiffin reads files)."""
    table = _kaldi_table(folder / "wav.scp", option)
    for number, key, value in table:
        if value.endswith("|"):
            raise TiffinError(f"{option} {folder / 'wav.scp'} line {number}: {key} is a piped command "
                              f"({value[:48]}); tiffin reads audio files: run the command to write a wav and list "
                              "its path")
        if re.search(r"\.ark:\d+$", value):
            raise TiffinError(f"{option} {folder / 'wav.scp'} line {number}: {key} is an offset into an archive "
                              f"({value}); list one audio file per recording")
    relative = [Path(v) for _, _, v in table if not Path(v).is_absolute()]
    bases = [audio_root] if audio_root is not None else [folder, folder.parent, folder.parent.parent, Path.cwd()]
    # Kaldi recipes run from the recipe folder (data/train/wav.scp lists paths relative to it)
    base = next((b for b in bases if relative and (b / relative[0]).exists()), bases[0])
    return {key: Path(value) if Path(value).is_absolute() else base / value for _, key, value in table}


def read_kaldi(folder: Path, option: str, audio_root: Path | None = None) -> list[Row]:
    """One Kaldi data directory: `text` transcripts of wav.scp's recordings, or of `segments`'
    spans of them (`SEGMENT RECORDING START END`, END -1 for the recording's end)."""
    recordings = _kaldi_recordings(folder, option, audio_root)
    texts = {key: (number, value) for number, key, value in _kaldi_table(folder / "text", option)}
    rows, used = [], set()
    if (folder / "segments").is_file():
        for number, key, value in _kaldi_table(folder / "segments", option):
            parts = value.split()
            try:
                recording, start, end = parts[0], float(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                raise TiffinError(f"{option} {folder / 'segments'} line {number}: expected SEGMENT RECORDING START "
                                  "END") from None
            error = "" if recording in recordings else f"recording {recording} is not in wav.scp"
            error = error or ("" if key in texts else "no transcript in text")
            used.add(key)
            rows.append(Row(recordings.get(recording, folder / recording), texts.get(key, (0, ""))[1],
                            f"{folder.name}/segments line {number}", error, start, None if end < 0 else end))
    else:
        for key, path in recordings.items():
            used.add(key)
            rows.append(Row(path, texts.get(key, (0, ""))[1], f"{folder.name}/wav.scp {key}",
                            "" if key in texts else "no transcript in text"))
    rows += [Row(folder / key, text, f"{folder.name}/text line {number}", "no recording in wav.scp/segments")
             for key, (number, text) in texts.items() if key not in used]
    return rows


# --- LibriSpeech --------------------------------------------------------------------------------

def read_librispeech_folder(root: Path, option: str) -> list[Row]:
    """SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt, one `UTTERANCE-ID TRANSCRIPT` line per utterance,
    its audio (flac) beside it as ID.EXT."""
    rows = []
    for trans in sorted(root.rglob("*.trans.txt")):
        audio = {p.stem: p for p in trans.parent.iterdir() if p.is_file() and is_audio_file(p)}
        for number, key, text in _kaldi_table(trans, option):
            path = audio.get(key, trans.parent / f"{key}.flac")
            rows.append(Row(path, text, f"{trans.relative_to(root)} line {number}",
                            "" if key in audio else "no audio file for this utterance id"))
    return rows


def _has_trans(p: Path) -> bool:
    return next(p.rglob("*.trans.txt"), None) is not None


def read_librispeech(root: Path, option: str, audio_root: Path | None = None) -> dict[str, list[Row]]:
    splits = _split_folders(root, _has_trans)
    if "train" not in splits:
        return {"train": read_librispeech_folder(root, option)}
    return {s: [r for f in splits[s] for r in read_librispeech_folder(f, option)] for s in SPLITS if s in splits}


# --- audio files with a .txt beside each ----------------------------------------------------------

def read_audio_and_txt(root: Path, option: str, audio_root: Path | None = None) -> dict[str, list[Row]]:
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            audio = Path(dirpath) / name
            if is_audio_file(audio):
                txt = audio.with_suffix(".txt")
                text, error = "", ""
                if txt.is_file():
                    try:
                        text = txt.read_text(encoding="utf-8-sig")
                    except UnicodeDecodeError:
                        error = "transcript is not UTF-8; save it as UTF-8"
                rows.append(Row(audio, text, str(txt.relative_to(root)) if txt.is_file() else f"{txt.name} (missing)",
                                error))
    return {"train": rows}


# (name, recognises a folder, reads it: rows per split); tried in order, the last always matches
LAYOUTS: list[tuple[str, Callable[[Path], bool], Callable[[Path, str, Path | None], dict[str, list[Row]]]]] = [
    ("common-voice", _is_common_voice, read_common_voice),
    ("audiofolder", _is_audiofolder, read_audiofolder),
    ("kaldi", _is_kaldi, lambda root, option, audio_root: _by_split(
        root, lambda p: (p / "wav.scp").is_file() and (p / "text").is_file(),
        lambda folder: read_kaldi(folder, option, audio_root))),
    ("librispeech", _has_trans, read_librispeech),
    ("audio+txt", lambda root: True, read_audio_and_txt),
]


def folder_layout(root: Path) -> str:
    """Which layout of LAYOUTS a speech folder is in."""
    return next(name for name, recognises, _ in LAYOUTS if recognises(Path(root)))


def read_layout(root: str | Path, option: str, audio_root: str | Path | None = None) -> FolderRead:
    """A speech folder in the first layout of LAYOUTS it matches, rows per split.

    Raises:
        TiffinError: no such folder, or no utterances in any layout tiffin knows.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TiffinError(f"{option} {root}: no such folder")
    if audio_root is not None and not Path(audio_root).expanduser().is_dir():
        raise TiffinError(f"--audio-root {audio_root}: no such folder")
    layout = folder_layout(root)
    read = next(r for name, _, r in LAYOUTS if name == layout)
    splits = read(root, option, Path(audio_root).expanduser() if audio_root is not None else None)
    if not splits.get("train"):
        if layout != "audio+txt":
            raise TiffinError(f"{option} {root}: its {layout} files list no utterances")
        raise TiffinError(f"{option} {root}: matches no layout tiffin knows (Common Voice: clips/ and train.tsv; "
                          "AudioFolder: metadata.csv; Kaldi: wav.scp and text; LibriSpeech: *.trans.txt; or audio "
                          "files with a .txt transcript beside each); for another layout give --train-csv with "
                          "--audio-root")
    return FolderRead(layout, splits)


def read_folder(root: str | Path, option: str, audio_root: str | Path | None = None) -> list[Row]:
    """The train split of a speech folder in any layout tiffin knows (read_layout)."""
    return read_layout(root, option, audio_root).splits["train"]
