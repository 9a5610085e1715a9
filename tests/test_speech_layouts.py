"""Speech corpora in their published layouts: Common Voice (TSVs + clips/ of 48 kHz mp3),
LibriSpeech (*.trans.txt + flac), and tables whose audio lives elsewhere (--audio-root)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import tiffin
from tests.speech_media import WORDS, utterance
from tiffin.ctc import Vocabulary
from tiffin.errors import TiffinError
from tiffin.train.speech_files import check_rows, folder_layout, read_folder, read_table

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
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_a_common_voice_folder_or_tsv_reads_as_published(tmp_path):
    cv = common_voice(tmp_path / "cv-corpus-20.0" / "en")
    assert folder_layout(cv) == "common-voice"
    rows = read_table(cv / "train.tsv", "speech_files", "targets", "--train-csv")  # the defaults: CV's columns
    assert len(rows) == 10 and all(r.path.parent == cv / "clips" and r.path.is_file() for r in rows)
    assert rows[0].where == "train.tsv line 2" and rows[0].text.endswith(".")
    assert [r.path for r in read_folder(cv, "--train-folder")] == [r.path for r in rows]
    utterances, report = check_rows(rows, Vocabulary(), 16000)
    assert len(utterances) == 10 and not report.bad  # 48 kHz mp3, resampled
    assert utterances[0].text == rows[0].text.rstrip(".").upper()


def test_training_on_a_common_voice_folder_uses_its_dev_split(tmp_path):
    cv = common_voice(tmp_path / "en")
    out = tmp_path / "run"
    result = tiffin("train", "speech", "--train-folder", cv, "--backbone", "tiffin/wav2vec2-tiny", "--max-steps", "1",
                    "--num-workers", "0", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    assert "common-voice layout, 10 utterances" in result.output and "dev.tsv (4 utterances)" in result.output
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
        lines.append(f"{speaker}-{chapter}-0099 AN UTTERANCE WHOSE FLAC IS MISSING")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    assert folder_layout(split) == "librispeech"
    rows = read_folder(split, "--train-folder")
    assert {r.path: r.text for r in rows if not r.error} == expected
    missing = [r for r in rows if r.error]
    assert len(missing) == 2 and missing[0].where.endswith(".trans.txt line 4")
    utterances, report = check_rows(rows, Vocabulary(), 16000)
    assert len(utterances) == 6 and [b.reason for b in report.bad] == ["no audio file for this utterance id"] * 2


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
