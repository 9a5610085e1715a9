"""Speech corpora in their published layouts: Common Voice (TSVs + clips/ of 48 kHz mp3),
LibriSpeech (*.trans.txt + flac), Hugging Face AudioFolder (metadata.csv/jsonl), Kaldi data
dirs (wav.scp, text, segments), and tables whose audio lives elsewhere (--audio-root)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import tiffin
from tests.speech_media import WORDS, utterance
from tiffin.ctc import Vocabulary
from tiffin.errors import TiffinError
from tiffin.train.speech_files import check_rows, read_table
from tiffin.train.speech_layouts import folder_layout, read_folder, read_layout

CV_HEADER = ("client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\t"
             "variant\tlocale\tsegment")


def sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)))) for _ in range(n)]


def common_voice(root, splits=(("train", 10), ("dev", 4), ("test", 3))):
    """A Common Voice locale folder as the release lays it out: clips/*.mp3 at 48 kHz, one TSV per split."""
    (root / "clips").mkdir(parents=True)
    for split, n in splits:
        lines = [CV_HEADER]
        for i, text in enumerate(sentences(n, hash(split) % 1000)):
            name = f"common_voice_en_{split}{i:04d}.mp3"
            sf.write(root / "clips" / name, utterance(text.split(), 48000), 48000, format="MP3")
            lines.append(f"c{i:03d}\t{name}\tsid{i}\t{text.capitalize()}.\t\t2\t0\tthirties\t\t\t\ten\t")
        if split == "train":  # the release's wart: a validated clip whose sentence is empty
            sf.write(root / "clips" / "common_voice_en_empty.mp3", utterance(["go"], 48000), 48000, format="MP3")
            lines.append("c999\tcommon_voice_en_empty.mp3\tsid999\t\t\t2\t0\t\t\t\t\ten\t")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_a_common_voice_folder_or_tsv_reads_as_published(tmp_path):
    cv = common_voice(tmp_path / "cv-corpus-20.0" / "en")
    assert folder_layout(cv) == "common-voice"
    rows = read_table(cv / "train.tsv", "speech_files", "targets", "--train-csv")  # the defaults: CV's columns
    assert len(rows) == 11 and all(r.path.parent == cv / "clips" and r.path.is_file() for r in rows)
    assert rows[0].where == "train.tsv line 2" and rows[0].text.endswith(".")
    assert [r.path for r in read_folder(cv, "--train-folder")] == [r.path for r in rows]
    utterances, report = check_rows(rows, Vocabulary(), 16000)
    assert len(utterances) == 10  # 48 kHz mp3, resampled
    assert [(b.where, b.reason) for b in report.bad] == [("train.tsv line 12", "empty transcript")]
    assert {s: len(r) for s, r in read_layout(cv, "--train-folder").splits.items()} == {
        "train": 11, "validation": 4, "test": 3}
    assert utterances[0].text == rows[0].text.rstrip(".").upper()


def test_training_on_a_common_voice_folder_uses_its_dev_split(tmp_path):
    cv = common_voice(tmp_path / "en")
    out = tmp_path / "run"
    result = tiffin("train", "speech", "--train-folder", cv, "--backbone", "tiffin/wav2vec2-tiny", "--max-steps", "1",
                    "--num-workers", "0", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    assert "common-voice layout, 11 utterances" in result.output and "own validation split (4 utterances)" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["train_utterances"], metrics["val_utterances"]) == (10, 4)


def test_a_librispeech_split_reads_its_transcript_files(tmp_path):
    split = tmp_path / "LibriSpeech" / "dev-clean"
    expected = {}
    for speaker, chapter in (("84", "121123"), ("174", "50561")):
        folder = split / speaker / chapter
        folder.mkdir(parents=True)
        lines = []
        for i, text in enumerate(sentences(3, int(chapter) % 97)):
            key = f"{speaker}-{chapter}-{i:04d}"
            sf.write(folder / f"{key}.flac", utterance(text.split(), 16000), 16000)
            lines.append(f"{key} {text.upper()}")
            expected[folder / f"{key}.flac"] = text.upper()
        key = f"{speaker}-{chapter}-0098"  # LibriSpeech's transcripts: upper case, with apostrophes
        sf.write(folder / f"{key}.flac", utterance(["cat", "up"], 16000), 16000)
        lines.append(f"{key} THE CAT'S UP")
        expected[folder / f"{key}.flac"] = "THE CAT'S UP"
        lines.append(f"{speaker}-{chapter}-0099 AN UTTERANCE WHOSE FLAC IS MISSING")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    assert folder_layout(split) == "librispeech"
    rows = read_folder(split, "--train-folder")
    assert {r.path: r.text for r in rows if not r.error} == expected
    missing = [r for r in rows if r.error]
    assert len(missing) == 2 and missing[0].where.endswith(".trans.txt line 5")
    utterances, report = check_rows(rows, Vocabulary(), 16000)
    assert "THE CAT'S UP" in {u.text for u in utterances}  # the apostrophe is in wav2vec2's vocabulary
    assert len(utterances) == 8 and [b.reason for b in report.bad] == ["no audio file for this utterance id"] * 2
    # the corpus root: train-clean-100 trains, dev-clean validates, the split named by its folder
    import shutil

    shutil.copytree(split / "84", tmp_path / "LibriSpeech" / "train-clean-100" / "84")
    read = read_layout(tmp_path / "LibriSpeech", "--train-folder")
    assert {s: len(r) for s, r in read.splits.items()} == {"train": 5, "validation": 10}
    from tiffin.speech import SpeechRecognitionData

    dm = SpeechRecognitionData.from_folders(train_folder=tmp_path / "LibriSpeech")
    assert (len(dm.rows["train"]), len(dm.rows["val"]), dm.rows["test"]) == (5, 10, None)


def test_audio_root_and_unknown_layouts(tmp_path):
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", utterance(["red", "cat"]), 16000)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.csv").write_text("speech_files,targets\na.wav,red cat\n")
    (row,) = read_table(tmp_path / "lists" / "train.csv", "speech_files", "targets", "--train-csv",
                        audio_root=tmp_path / "audio")
    assert row.path == tmp_path / "audio" / "a.wav"
    with pytest.raises(TiffinError, match="--audio-root"):
        read_table(tmp_path / "lists" / "train.csv", "speech_files", "targets", "--train-csv", tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.md").write_text("x")
    with pytest.raises(TiffinError) as info:
        read_folder(tmp_path / "other", "--train-folder")
    assert all(name in str(info.value) for name in ("Common Voice", "LibriSpeech", "--audio-root"))


def test_predict_files_of_the_python_api_take_audio_root_and_bad_lines_are_one_line_errors(tmp_path):
    from tiffin.speech import SpeechRecognitionData

    (tmp_path / "audio").mkdir()
    (tmp_path / "predict.csv").write_text("speech_files\na.wav\n\nsub/b.wav\n")
    (tmp_path / "predict.jsonl").write_text('{"speech_files": "a.wav"}\n\n{"speech_files": "/abs/c.wav"}\n')
    csv_dm = SpeechRecognitionData.from_csv(predict_file=tmp_path / "predict.csv", audio_root=tmp_path / "audio")
    assert csv_dm.predict_files == [tmp_path / "audio" / "a.wav", tmp_path / "audio" / "sub" / "b.wav"]
    json_dm = SpeechRecognitionData.from_json(predict_file=tmp_path / "predict.jsonl")
    assert json_dm.predict_files == [tmp_path / "a.wav", Path("/abs/c.wav")]
    (tmp_path / "bad.jsonl").write_text('{"speech_files": "a.wav"}\nnot json\n')
    for call, words in [
        (lambda: SpeechRecognitionData.from_json(predict_file=tmp_path / "bad.jsonl"), "line 2 is not JSON"),
        (lambda: SpeechRecognitionData.from_json(predict_file=tmp_path / "none.jsonl"), "no such file"),
        (lambda: SpeechRecognitionData.from_csv("path", predict_file=tmp_path / "predict.csv"), "no column 'path'"),
    ]:
        with pytest.raises(TiffinError) as info:
            call()
        assert words in str(info.value) and "\n" not in str(info.value)


def audiofolder(root):
    """A Hugging Face AudioFolder: split folders, each with its metadata (csv or jsonl) and audio."""
    expected = {}
    for split, n, kind in (("train", 8, "csv"), ("validation", 3, "jsonl"), ("test", 2, "csv")):
        folder = root / split / "data"
        folder.mkdir(parents=True)
        rows = []
        for i, text in enumerate(sentences(n, n)):
            sf.write(folder / f"{i}.wav", utterance(text.split(), 22050), 22050)
            rows.append((f"data/{i}.wav", text))
        rows.append(("data/silent.wav", ""))  # a row with an empty transcription, as scraped sets have
        sf.write(folder / "silent.wav", np.zeros(8000, np.float32), 16000)
        if kind == "csv":
            (root / split / "metadata.csv").write_text(
                "file_name,transcription,speaker\n" + "".join(f"{f},{t},s1\n" for f, t in rows))
        else:
            (root / split / "metadata.jsonl").write_text(
                "".join(json.dumps({"file_name": f, "transcription": t}) + "\n" for f, t in rows))
        expected[split] = n + 1
    return expected


def test_an_audiofolder_reads_its_split_folders_and_metadata(tmp_path):
    expected = audiofolder(tmp_path / "af")
    read = read_layout(tmp_path / "af", "--train-folder")
    assert read.layout == "audiofolder"
    assert {split: len(rows) for split, rows in read.splits.items()} == expected
    assert read.splits["validation"][0].path == tmp_path / "af" / "validation" / "data" / "0.wav"
    utterances, report = check_rows(read.splits["train"], Vocabulary(), 16000)
    assert len(utterances) == 8 and [b.reason for b in report.bad] == ["empty transcript"]
    out = tmp_path / "run"
    result = tiffin("train", "speech", "--train-folder", tmp_path / "af", "--backbone", "tiffin/wav2vec2-tiny",
                    "--max-steps", "1", "--num-workers", "0", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    assert "audiofolder layout, 9 utterances (splits: train 9, validation 4, test 3)" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["train_utterances"], metrics["val_utterances"], len(metrics["skipped_rows"])) == (8, 3, 2)
    # one metadata at the top, the split in the path's first folder (AudioFolder allows both)
    flat = tmp_path / "flat"
    for split in ("train", "test"):
        (flat / split).mkdir(parents=True)
        sf.write(flat / split / "a.wav", utterance(["red", "cat"]), 16000)
    (flat / "metadata.csv").write_text("file_name,sentence\ntrain/a.wav,red cat\ntest/a.wav,red cat\n")
    assert {s: len(r) for s, r in read_layout(flat, "--train-folder").splits.items()} == {"train": 1, "test": 1}
    (flat / "metadata.csv").write_text("file_name,label\ntrain/a.wav,0\n")
    with pytest.raises(TiffinError, match="transcript column"):
        read_layout(flat, "--train-folder")


def kaldi(recipe):
    """A Kaldi recipe's data dirs: data/train cuts two long recordings into segments (paths in
    wav.scp relative to the recipe folder, as Kaldi runs from it); data/dev lists whole files."""
    (recipe / "wav").mkdir(parents=True)
    train, dev = recipe / "data" / "train", recipe / "data" / "dev"
    train.mkdir(parents=True)
    dev.mkdir(parents=True)
    scp, text, segments = [], [], []
    for r in range(2):
        parts = sentences(3, 10 + r)
        waves = [utterance(p.split(), 16000) for p in parts]
        sf.write(recipe / "wav" / f"rec{r}.wav", np.concatenate(waves), 16000)
        scp.append(f"rec{r} wav/rec{r}.wav")
        t = 0.0
        for i, (p, w) in enumerate(zip(parts, waves)):
            end = t + len(w) / 16000
            segments.append(f"rec{r}-{i} rec{r} {t:.3f} {end:.3f}" if i < 2 else f"rec{r}-{i} rec{r} {t:.3f} -1")
            text.append(f"rec{r}-{i} {p.upper()}")
            t = end
    segments.append("rec1-9 rec1 0.000 0.500")  # a segment the text file lacks
    (train / "wav.scp").write_text("\n".join(scp) + "\n")
    (train / "text").write_text("\n".join(text) + "\n")
    (train / "segments").write_text("\n".join(segments) + "\n")
    (train / "utt2spk").write_text("".join(f"{line.split()[0]} spk\n" for line in text))
    for i, p in enumerate(sentences(2, 30)):
        sf.write(recipe / "wav" / f"dev{i}.wav", utterance(p.split(), 8000), 8000)
    (dev / "wav.scp").write_text("dev0 wav/dev0.wav\ndev1 wav/dev1.wav\n")
    (dev / "text").write_text("".join(f"dev{i} {p}\n" for i, p in enumerate(sentences(2, 30))))
    return recipe / "data"


def test_a_kaldi_data_dir_reads_wav_scp_text_and_segments(tmp_path):
    data = kaldi(tmp_path / "egs" / "s5")
    read = read_layout(data, "--train-folder")
    assert read.layout == "kaldi" and {s: len(r) for s, r in read.splits.items()} == {"train": 7, "validation": 2}
    train = read.splits["train"]
    assert train[0].path == tmp_path / "egs" / "s5" / "wav" / "rec0.wav" and train[0].start == 0.0
    assert train[2].end is None and train[1].start == pytest.approx(train[0].end, abs=1e-3)
    assert [r.error for r in train if r.error] == ["no transcript in text"]
    utterances, report = check_rows(train, Vocabulary(), 16000)
    assert len(utterances) == 6 and len(report.bad) == 1
    whole = sf.info(train[0].path).frames
    first_two = sum(u.samples for u in utterances[:3])  # three segments tile recording 0
    assert abs(first_two - whole) <= 2
    from tiffin.train.speech_data import SpeechDataset

    item = SpeechDataset(utterances, 16000)[1]
    assert len(item["wave"]) == utterances[1].samples  # the dataset reads the segment, not the recording
    (data / "dev" / "wav.scp").write_text("dev0 flac -c -d -s /corpus/dev0.flac |\n")
    with pytest.raises(TiffinError) as info:
        read_layout(data / "dev", "--train-folder")
    assert "wav.scp line 1: dev0 is a piped command" in str(info.value) and "\n" not in str(info.value)


def test_kaldi_segments_train_evaluate_and_predict_by_span(tmp_path):
    data = kaldi(tmp_path / "s5")
    out = tmp_path / "run"
    result = tiffin("train", "speech", "--train-folder", data, "--backbone", "tiffin/wav2vec2-tiny", "--max-steps", "1",
                    "--num-workers", "0", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    assert "kaldi layout, 7 utterances (splits: train 7, validation 2)" in result.output
    assert "own validation split (2 utterances)" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["train_utterances"], metrics["val_utterances"]) == (6, 2)
    result = tiffin("evaluate", "tiffin/tiny-en", data / "train")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert (scores["utterances"], scores["unreadable"]) == (6, 1)
    # --start/--end transcribe a span: the same as the span cut out into its own file
    rec = tmp_path / "s5" / "wav" / "rec0.wav"
    wave, _ = sf.read(rec, dtype="float32")
    sf.write(tmp_path / "cut.wav", wave[8000:24000], 16000)
    spans = json.loads(tiffin("predict", "tiffin/tiny-en", rec, "--start", "0.5", "--end", "1.5", "--json").output)
    cut = json.loads(tiffin("predict", "tiffin/tiny-en", tmp_path / "cut.wav", "--json").output)
    assert spans[0]["text"] == cut[0]["text"] and (spans[0]["start"], spans[0]["end"]) == (0.5, 1.5)
    assert spans[0]["duration_s"] == cut[0]["duration_s"] == 1.0
    bad = tiffin("predict", "tiffin/tiny-en", rec, "--start", "99")
    assert bad.exit_code == 1 and "has no audio from 99 s to its end" in bad.output


def test_mixed_audio_formats_and_rates_train_together(tmp_path):
    """wav 8 kHz, flac 22.05 kHz, mp3 and opus 48 kHz, ogg vorbis, m4a (aac) 44.1 kHz in one CSV:
    every row decodes and trains (predict and serving take the same formats: tests/media_corpus.py)."""
    from tests.media_corpus import _encoded

    formats = [("a.wav", dict(samplerate=8000)), ("b.flac", dict(samplerate=22050)),
               ("c.mp3", dict(samplerate=48000, format="MP3")), ("d.ogg", dict(samplerate=16000, subtype="VORBIS")),
               ("e.m4a", "aac"), ("f.opus", "libopus")]
    texts = sentences(len(formats) * 2, 5)
    lines = ["speech_files,targets"]
    for k, text in enumerate(texts):
        name, how = formats[k % len(formats)]
        name = f"{k}{name}"
        if isinstance(how, dict):
            rate = how.pop("samplerate")
            sf.write(tmp_path / name, utterance(text.split(), rate), rate, **how)
            how["samplerate"] = rate
        else:
            sf.write(tmp_path / "seed.wav", utterance(text.split(), 16000), 16000)
            _encoded(how, 44100 if how == "aac" else 48000)(tmp_path / name, {"wav": tmp_path / "seed.wav"})
        lines.append(f"{name},{text}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    utterances, report = check_rows(read_table(tmp_path / "train.csv", "speech_files", "targets", "--train-csv"),
                                    Vocabulary(), 16000)
    assert len(utterances) == len(texts) and not report.bad
    out = tmp_path / "run"
    result = tiffin("train", "speech", "--train-csv", tmp_path / "train.csv", "--val-split", "0.25",
                    "--backbone", "tiffin/wav2vec2-tiny", "--max-steps", "1", "--num-workers", "0", "--no-progress",
                    "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_utterances"] + metrics["val_utterances"] == len(texts) and not metrics["skipped_rows"]
