"""train.speech_data: CSV/TSV/JSONL/folder readers, row checks, length buckets, padding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.speech_media import write_corpus
from tiffin.ctc import Vocabulary
from tiffin.errors import TiffinError
from tiffin.train.speech_data import (
    LengthBucketSampler,
    SpeechDataset,
    check_rows,
    collate_speech,
    read_folder,
    read_jsonl,
    read_table,
)


def test_csv_with_bare_names_index_column_bom_and_crlf(tmp_path):
    rows = write_corpus(tmp_path / "audio", 3)
    lines = [",speech_files,targets"] + [f"{i},audio/{name},{text}" for i, (name, text) in enumerate(rows)]
    (tmp_path / "train.csv").write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())
    table = read_table(tmp_path / "train.csv", "speech_files", "targets", "--train-csv")
    assert [r.path for r in table] == [tmp_path / "audio" / n for n, _ in rows]
    assert [r.text for r in table] == [t for _, t in rows]
    assert table[1].where == "train.csv line 3"
    tsv = "path\tsentence\n" + "\n".join(f"audio/{n}\t{t}" for n, t in rows)
    (tmp_path / "train.tsv").write_text(tsv)
    assert len(read_table(tmp_path / "train.tsv", "path", "sentence", "--train-csv")) == 3
    with pytest.raises(TiffinError, match="--audio-column"):
        read_table(tmp_path / "train.tsv", "speech_files", "sentence", "--train-csv")


def test_jsonl_and_folder_of_txt_transcripts(tmp_path):
    rows = write_corpus(tmp_path, 3)
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps({"audio": n, "text": t}) for n, t in rows) + "\n\n")
    assert [r.text for r in read_jsonl(tmp_path / "data.jsonl", "audio", "text", "--train-json")] == [t for _, t in rows]
    for name, text in rows[:2]:
        (tmp_path / name).with_suffix(".txt").write_text(text + "\n")
    folder = read_folder(tmp_path, "--train-folder")
    assert len(folder) == 3 and folder[2].text == "" and "missing" in folder[2].where


def test_bad_rows_are_reported_with_row_and_path(tmp_path):
    rows = write_corpus(tmp_path, 2)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.flac").write_bytes(b"not audio at all" * 20)
    lines = ["speech_files,targets"] + [f"{n},{t}" for n, t in rows] + [
        "missing.wav,hello", "empty.wav,hello", "junk.flac,hello", f"{rows[0][0]},", f"{rows[0][0]},123 !!"]
    (tmp_path / "train.csv").write_text("\n".join(lines))
    table = read_table(tmp_path / "train.csv", "speech_files", "targets", "--train-csv")
    good, report = check_rows(table, Vocabulary(), 16000)
    assert len(good) == 2 and good[0].text == rows[0][1].upper()
    reasons = {b.where: b.reason for b in report.bad}
    assert set(reasons) == {f"train.csv line {k}" for k in (4, 5, 6, 7, 8)}
    assert reasons["train.csv line 4"] == "no such file" and "empty" in reasons["train.csv line 5"]
    assert reasons["train.csv line 7"] == "empty transcript"
    assert "no character of the vocabulary" in reasons["train.csv line 8"]
    with pytest.raises(TiffinError, match="train.csv line 4: .*missing.wav"):
        check_rows(table, Vocabulary(), 16000, strict=True)


def test_unknown_characters_are_counted(tmp_path):
    rows = write_corpus(tmp_path, 1)
    from tiffin.train.speech_data import Row

    good, report = check_rows([Row(tmp_path / rows[0][0], "naïve 42 cats", "x")], Vocabulary(), 16000)
    assert good[0].text == "NAVE CATS" and report.unknown == {"Ï": 1, "4": 1, "2": 1}


def test_length_buckets_cover_every_utterance_and_cut_padding():
    lengths = list(np.random.default_rng(0).integers(8000, 160000, 203))
    sampler = LengthBucketSampler(lengths, batch_size=8, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(203)) and len(batches) == len(sampler)
    from tiffin.train.speech_datamodule import padding_fraction

    unbucketed = [list(range(i, min(i + 8, 203))) for i in range(0, 203, 8)]
    assert padding_fraction(lengths, batches) < 0.1 < padding_fraction(lengths, unbucketed)
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch
    shards = [list(LengthBucketSampler(lengths, 8, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(LengthBucketSampler(lengths, 8, world_size=2))
    assert {i for b in shards[0] + shards[1] for i in b} == set(range(203))


def test_dataset_resamples_and_collate_pads(tmp_path):
    rows = write_corpus(tmp_path, 4)
    from tiffin.train.speech_data import Row

    utts, _ = check_rows([Row(tmp_path / n, t, str(i)) for i, (n, t) in enumerate(rows)], Vocabulary(), 16000)
    ds = SpeechDataset(utts, 16000)
    items = [ds[i] for i in range(4)]
    assert [len(x["wave"]) for x in items] == [u.samples for u in utts]  # lengths known before decoding
    batch = collate_speech(items)
    assert batch["wave"].shape == (4, max(u.samples for u in utts))
    assert batch["lengths"].tolist() == [u.samples for u in utts]
    assert torch.all(batch["wave"][0, utts[0].samples :] == 0)
    assert batch["labels"][0, : len(utts[0].ids)].tolist() == list(utts[0].ids)
    assert 0 <= batch["pad_fraction"] < 1
