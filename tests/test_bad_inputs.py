"""The bad-input corpus: odd and broken media through `tiffin predict`, messy datasets through training.

The services get the same media corpus in tests/test_serve.py (directly and over HTTP).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import tiffin
from tests.media_corpus import CASES, OK
from tests.speech_media import write_corpus
from tiffin.ctc import Vocabulary
from tiffin.errors import TiffinError


def test_media_corpus_through_predict(media_corpus, corpus_predictions):
    assert len(media_corpus) == len(CASES) >= 30
    for task in ("video", "speech"):
        exit_code, output = corpus_predictions[None][task]
        assert exit_code == 1 and "Traceback" not in output  # 1: some files could not be read
    for case, path in media_corpus:
        entry = corpus_predictions[path]
        if case.predict_answers:
            assert "error" not in entry, (case.name, entry)
            assert ("labels" if case.field == "video" else "text") in entry, (case.name, entry)
            # a file cut short is answered from its readable part, and the answer says so
            assert [case.warns in w for w in entry.get("warnings", [])] == ([True] if case.warns else []), entry
        else:
            assert "\n" not in entry["error"] and entry["error"], (case.name, entry)
    # answers that are not refusals are real answers: top-2 labels, or the seed recording's words
    assert all(len(corpus_predictions[p]["labels"]) == 2 for c, p in media_corpus if c.field == "video" and c.predict_answers)
    by_name = {case.name: corpus_predictions[path] for case, path in media_corpus}
    assert by_name["0.01 s of audio"]["duration_s"] == 0.01
    # predict applies serving's limits (tiffin.limits): five hours are over the 4 h default
    assert "TIFFIN_MAX_AUDIO_SECONDS" in by_name["5 h of silence"]["error"]
    same_audio = [by_name[n]["text"] for n in ("24-bit wav", "float wav", "6-channel wav")]
    assert same_audio[0] and len(set(same_audio)) == 1  # the format does not change what is heard


# --- datasets --------------------------------------------------------------------------------

SPEECH_QUIRKS = ["missing file", "zero-byte file", "duplicate row", "same file with another transcript",
                 "non-UTF-8 CSV", "non-UTF-8 transcript file", "non-UTF-8 JSON lines", "empty lines", "BOM",
                 "Windows line endings", "empty transcript", "transcript outside the vocabulary",
                 "audio too short for its transcript", "NaN samples"]
VIDEO_QUIRKS = ["missing file", "zero-byte file", "text renamed .mp4", "duplicate row", "same file under two labels",
                "labels with spaces", "unicode labels", "symlink loop in a class folder", "hidden files",
                "non-video files", "non-UTF-8 CSV", "empty class folder"]


def _speech_dataset(root: Path) -> Path:
    """A CSV holding every speech quirk beside 12 good rows; the bad rows name their files."""
    rows = write_corpus(root / "clips", 12)
    clips = root / "clips"
    (clips / "empty.wav").write_bytes(b"")
    sf.write(clips / "blip.wav", np.zeros(800, np.float32), 16000)  # 0.05 s: 2 frames for a long transcript
    nan = np.zeros(16000, np.float32)
    nan[5] = np.nan
    sf.write(clips / "nan.wav", nan, 16000, subtype="FLOAT")
    lines = [f"clips/{name},{text}" for name, text in rows[:10]]
    lines += ["", "clips/nowhere.wav,a missing file", "", "clips/empty.wav,zero bytes",
              f"clips/{rows[0][0]},{rows[0][1].upper()}",  # the same row again (case differs, normalised the same)
              "clips/blip.wav,a transcript far too long for five hundredths of a second",
              "clips/nan.wav,not a number", f"clips/{rows[10][0]},", f"clips/{rows[11][0]},1234 ???"]
    csv = root / "train.csv"
    csv.write_bytes(("\ufeffspeech_files,targets\r\n" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    return csv


def test_speech_dataset_quirks_are_reported_by_path(tmp_path):
    from tiffin.train.speech_data import check_rows, read_folder, read_jsonl, read_table

    csv = _speech_dataset(tmp_path)
    rows = read_table(csv, "speech_files", "targets", "--train-csv")
    assert len(rows) == 17  # empty lines skipped; BOM and CRLF did not leak into names or paths
    good, report = check_rows(rows, Vocabulary(), 16000, conv=([10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]))
    assert len(good) == 10 and report.duplicates == 1
    reasons = {Path(b.path).name: b.reason for b in report.bad}
    no_text, no_letters = (sorted((tmp_path / "clips").glob("u*"))[i].name for i in (10, 11))
    assert set(reasons) == {"nowhere.wav", "empty.wav", "blip.wav", "nan.wav", no_text, no_letters}
    assert "no such file" in reasons["nowhere.wav"] and "too short for its transcript" in reasons["blip.wav"]
    assert "NaN" in reasons["nan.wav"] and "empty transcript" in reasons[no_text]
    assert "no character of the vocabulary" in reasons[no_letters]
    assert all(b.where.startswith("train.csv line ") for b in report.bad)
    with pytest.raises(TiffinError, match="nowhere.wav"):
        check_rows(rows, Vocabulary(), 16000, strict=True)

    # the same file with two transcripts cannot be guessed between
    third = sorted((tmp_path / "clips").glob("u*"))[3].name
    csv.write_text(csv.read_text(encoding="utf-8-sig") + f"clips/{third},something else entirely\n")
    with pytest.raises(TiffinError, match=f"{third} is listed before"):
        check_rows(read_table(csv, "speech_files", "targets", "--train-csv"), Vocabulary(), 16000)

    # non-UTF-8: a CSV or JSON-lines file is refused whole, a folder's transcript file is a bad row
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"speech_files,targets\nclips/{third},caf\xe9\n".encode("latin-1"))
    with pytest.raises(TiffinError, match="latin.csv: is not UTF-8"):
        read_table(latin, "speech_files", "targets", "--train-csv")
    jsonl = tmp_path / "latin.jsonl"
    jsonl.write_bytes(f'{{"speech_files": "clips/{third}", "targets": "caf\xe9"}}\n'.encode("latin-1"))
    with pytest.raises(TiffinError, match="latin.jsonl: is not UTF-8"):
        read_jsonl(jsonl, "speech_files", "targets", "--train-json")
    (tmp_path / "clips" / Path(third).with_suffix(".txt")).write_bytes("caf\xe9".encode("latin-1"))
    _, report = check_rows(read_folder(tmp_path / "clips", "--train-folder"), Vocabulary(), 16000)
    assert any(b.path.endswith(third) and "not UTF-8" in b.reason for b in report.bad)


def test_training_on_a_messy_speech_csv_goes_on_or_stops_with_strict(tmp_path):
    csv = _speech_dataset(tmp_path)
    args = ("train", "speech", "--train-csv", csv, "--backbone", "tiffin/wav2vec2-tiny", "--max-steps", "1",
            "--num-workers", "0", "--no-progress")
    result = tiffin(*args, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    for name in ("nowhere.wav", "empty.wav", "blip.wav", "nan.wav"):
        assert name in result.output
    skipped = json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_rows"]
    assert len(skipped) == 6
    strict = tiffin(*args, "--strict", "--out", tmp_path / "strict")
    assert strict.exit_code == 2 and "nowhere.wav" in strict.output and "Traceback" not in strict.output
    assert not (tmp_path / "strict" / "checkpoints").exists()


def test_video_dataset_quirks_are_reported_and_odd_labels_survive_to_predict(motion_dataset, tmp_path):
    data = tmp_path / "data"
    sources = sorted(p for p in motion_dataset.rglob("*.mp4"))
    for label, files in (("jump rope", sources[0:4]), ("café crème", sources[4:8])):
        (data / label).mkdir(parents=True)
        for f in files:
            (data / label / f.name).write_bytes(f.read_bytes())
    (data / "jump rope" / "empty.mp4").write_bytes(b"")
    (data / "jump rope" / "notes.mp4").write_text("not a video\n" * 20)
    (data / "jump rope" / "README.txt").write_text("ignored")
    (data / "jump rope" / ".hidden.mp4").write_bytes(b"x")
    os.symlink(data / "jump rope", data / "jump rope" / "loop")  # a folder link back to its parent
    (data / "empty class").mkdir()

    base = ("train", "video", "--backbone", "x3d_xs", "--no-pretrained", "--num-frames", "4", "--crop-size", "32",
            "--clip-duration", "0.8", "--max-steps", "2", "--num-workers", "0", "--no-progress", "--val-split", "0.5")
    refused = tiffin(*base, "--train-folder", data, "--out", tmp_path / "refused")
    assert refused.exit_code == 2 and "'empty class' has no videos" in refused.output
    (data / "empty class").rmdir()

    run = tiffin(*base, "--train-folder", data, "--out", tmp_path / "run")
    assert run.exit_code == 0, run.output
    assert "empty.mp4" in run.output and "notes.mp4" in run.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert sorted(Path(s["path"]).name for s in metrics["skipped_files"]) == ["empty.mp4", "notes.mp4"]
    strict = tiffin(*base, "--train-folder", data, "--strict", "--out", tmp_path / "strict")
    assert strict.exit_code == 2 and "empty.mp4" in strict.output

    answer = tiffin("predict", tmp_path / "run" / "checkpoints" / "best.ckpt", sources[0], "--json", "--top-k", "2")
    assert {entry["label"] for entry in json.loads(answer.stdout)[0]["labels"]} == {"jump rope", "café crème"}

    # a CSV: a missing file is skipped by path, a repeated row used once, one file under two labels refused
    csv = tmp_path / "videos.csv"
    lines = [f"{f},jump rope" for f in sources[0:4]] + [f"{f},café crème" for f in sources[4:8]]
    csv.write_text("path,label\n" + "\n".join(lines + [lines[0], "nowhere.mp4,jump rope"]) + "\n")
    listed = tiffin(*base, "--train-csv", csv, "--out", tmp_path / "csv-run")
    assert listed.exit_code == 0 and "nowhere.mp4" in listed.output, listed.output
    csv.write_text(csv.read_text() + f"{sources[0]},café crème\n")
    conflict = tiffin(*base, "--train-csv", csv, "--out", tmp_path / "conflict")
    assert conflict.exit_code == 2 and "labelled both" in conflict.output
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"path,label\n{sources[0]},caf\xe9\n".encode("latin-1"))
    result = tiffin(*base, "--train-csv", latin, "--out", tmp_path / "latin")
    assert result.exit_code == 2 and "is not UTF-8" in result.output


def test_readme_states_the_counts_tried():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"**Bad media: {len(CASES)} generated cases**" in readme
    answered = sum(case.status == OK for case in CASES)
    assert f"the {answered} that should" in readme and f"the {len(CASES) - answered} others" in readme
    assert f"**Messy datasets: {len(SPEECH_QUIRKS) + len(VIDEO_QUIRKS)} quirks.** Speech ({len(SPEECH_QUIRKS)})" in readme
    assert f"Video ({len(VIDEO_QUIRKS)})" in readme
