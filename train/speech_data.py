"""Speech datasets: a CSV/TSV, JSON lines or a folder of audio + .txt in, padded batches out.

Every row is checked before training (audio readable, non-empty, finite; transcript non-empty
after normalisation) and bad ones are reported with their row and path. Batches group
utterances of similar length (bucketing) so padding stays low.
Exercised by `tiffin train speech --train-csv F`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tiffin.audio_io import is_audio_file, load_audio, read_audio
from tiffin.ctc import Normalised, Vocabulary
from tiffin.errors import MediaError, TiffinError
from tiffin.inference import output_frames
from train.table_io import open_table


@dataclass(frozen=True)
class Row:
    """One transcribed recording as the user listed it; `where` is e.g. 'train.csv line 7'."""

    path: Path
    text: str
    where: str
    error: str = ""  # a problem found while listing the row (an unreadable transcript file)


@dataclass(frozen=True)
class Utterance:
    """A checked row: normalised transcript, label ids and length in samples at the model rate."""

    path: Path
    text: str
    ids: tuple[int, ...]
    samples: int


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


def read_table(path: str | Path, audio_column: str, text_column: str, option: str) -> list[Row]:
    """Rows of a CSV or TSV (delimiter sniffed; BOM, CRLF and a pandas index column tolerated).

    Raises:
        TiffinError: missing file, not UTF-8, or a header without the named columns.
    """
    path, reader = open_table(path, option, f"a CSV or TSV with {audio_column},{text_column} columns")
    fields = [f for f in (reader.fieldnames or []) if f is not None]
    for column, flag in ((audio_column, "--audio-column"), (text_column, "--text-column")):
        if column not in fields:
            raise TiffinError(f"{option} {path}: has no column {column!r} (found {fields}); name yours with {flag}")
    rows = []
    for row in reader:
        file, transcript = (row.get(audio_column) or "").strip(), row.get(text_column) or ""
        if not file and not transcript.strip():
            continue
        rows.append(Row(_resolve(path.parent, file), transcript, f"{path.name} line {reader.line_num}"))
    return rows


def read_jsonl(path: str | Path, audio_column: str, text_column: str, option: str) -> list[Row]:
    """Rows of a JSON-lines file, one object per line with the named keys."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TiffinError(f"{option} {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise TiffinError(f"{option} {path}: is not UTF-8 text; save it as UTF-8") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TiffinError(f"{option} {path}: line {number} is not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or audio_column not in obj or text_column not in obj:
            raise TiffinError(f"{option} {path}: line {number} lacks {audio_column!r} or {text_column!r}; "
                              "name yours with --audio-column/--text-column")
        rows.append(Row(_resolve(path.parent, str(obj[audio_column])), str(obj[text_column]), f"{path.name} line {number}"))
    return rows


def read_folder(root: str | Path, option: str) -> list[Row]:
    """Audio files with a transcript `.txt` of the same name beside each (found recursively)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TiffinError(f"{option} {root}: no such folder")
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
    if not rows:
        raise TiffinError(f"{option} {root}: holds no audio files with .txt transcripts")
    return rows


@dataclass
class CheckReport:
    """What checking the rows found besides the usable utterances."""

    bad: list[BadRow]
    punctuation: Counter
    unknown: Counter
    duplicates: int = 0  # rows naming a file an earlier row named with the same transcript, dropped


def check_rows(rows: list[Row], vocab: Vocabulary, sample_rate: int, strict: bool = False,
               conv: tuple[list[int], list[int]] | None = None) -> tuple[list[Utterance], CheckReport]:
    """Decode every row's audio (threads) and normalise its transcript. With the model's conv
    `(kernels, strides)`, a recording too short for CTC to spell its transcript is a bad row.

    Raises:
        TiffinError: the first bad row, when `strict`.
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
            wave, rate = read_audio(row.path)
        except MediaError as err:
            return BadRow(row.where, err.path, err.reason)
        utterance = Utterance(row.path, normalised.text, tuple(vocab.encode(normalised.text)),
                              int(np.ceil(len(wave) * sample_rate / rate)))
        if conv is not None:
            frames, needed = output_frames(utterance.samples, *conv), ctc_frames_needed(utterance.ids)
            if frames < needed:
                return BadRow(row.where, str(row.path), f"{len(wave) / rate:.2f} s is too short for its transcript "
                                                        f"({frames} frames for {needed} needed)")
        return utterance, normalised

    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        results = list(pool.map(one, rows))
    report = CheckReport([r for r in results if isinstance(r, BadRow)], Counter(), Counter(), duplicates)
    if report.bad and strict:
        raise TiffinError(f"{report.bad[0]} (--strict)")
    good = []
    for r in results:
        if isinstance(r, tuple):
            utterance, normalised = r
            report.punctuation.update(normalised.punctuation)
            report.unknown.update(normalised.unknown)
            good.append(utterance)
    return good, report


def drop_duplicates(rows: list[Row], vocab: Vocabulary) -> tuple[list[Row], int]:
    """Keep the first of rows naming the same file with the same transcript (after normalisation).

    Raises:
        TiffinError: the same file with two different transcripts.
    """
    first: dict[Path, tuple[Row, str]] = {}  # file -> its first row and normalised transcript
    kept = []
    for row in rows:
        key, text = row.path.resolve(), vocab.normalise(row.text).text
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


class SpeechDataset(Dataset):
    """Utterances as float32 waveforms at the model rate with their label ids."""

    def __init__(self, utterances: list[Utterance], sample_rate: int):
        self.utterances, self.sample_rate = utterances, sample_rate

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> dict:
        u = self.utterances[i]
        wave = load_audio(u.path, self.sample_rate)
        return {"wave": torch.from_numpy(wave), "ids": torch.tensor(u.ids, dtype=torch.long), "text": u.text}


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of utterances of similar length, in a shuffled order, sharded across processes.

    Each epoch: shuffle (seed + epoch), cut into pools of `pool_batches` batches, sort each pool
    by length, split into batches, shuffle the batches. Every process takes its own batches
    (rank::world_size), so DDP needs no DistributedSampler.
    """

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, pool_batches: int = 50):
        self.lengths, self.batch_size, self.shuffle, self.seed = lengths, batch_size, shuffle, seed
        self.rank, self.world_size, self.pool = rank, world_size, pool_batches * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.pool):
            pool = sorted(order[start : start + self.pool].tolist(), key=lambda i: self.lengths[i])
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        # Every process gets the same number of batches (DDP steps in lockstep): pad by repeating.
        per_rank = -(-len(batches) // self.world_size)
        batches += batches[: per_rank * self.world_size - len(batches)]
        return batches[self.rank :: self.world_size]

    def __iter__(self):
        # a generator: the batches are drawn at the first fetch, after the epoch was set
        yield from self._batches()

    def __len__(self) -> int:
        n_batches = -(-len(self.lengths) // self.batch_size)
        return -(-n_batches // self.world_size)


def collate_speech(batch: list[dict]) -> dict:
    """Zero-pad waveforms; labels padded with -1; lengths and the padding fraction alongside."""
    lengths = torch.tensor([len(b["wave"]) for b in batch])
    waves = torch.zeros(len(batch), int(lengths.max()))
    for i, b in enumerate(batch):
        waves[i, : len(b["wave"])] = b["wave"]
    label_lengths = torch.tensor([len(b["ids"]) for b in batch])
    labels = torch.full((len(batch), int(label_lengths.max())), -1, dtype=torch.long)
    for i, b in enumerate(batch):
        labels[i, : len(b["ids"])] = b["ids"]
    return {"wave": waves, "lengths": lengths, "labels": labels, "label_lengths": label_lengths,
            "texts": [b["text"] for b in batch], "pad_fraction": 1.0 - float(lengths.sum()) / waves.numel()}
