"""Hours of speech in constant memory: a recording streams through decoding, resampling, the
model's windows, stitching and CTC decoding (tiffin.speech_stream), in `tiffin predict`, the
Python API and the service. The transcript equals the old path's (the whole recording's windows
stitched, then decoded), silent windows are skipped without changing it, and peak RSS does not
grow with the length. The 2-hour case runs with `make test-long`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import SERVER_PIDS, post_multipart, running_server, tiffin
from tests.long_media import spoken, write_long

EVERY = 90.0  # a sentence at the start of every 90 s: most 30 s windows are silence


def peak_mb(pid: int | str = "self") -> float:
    """The process's peak resident memory (VmHWM) since the last reset_peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def reset_peak(pid: int | str = "self") -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the kernel's "reset the peak RSS to now"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """The embedded English model exported to ONNX: a model that spells words."""
    out = tmp_path_factory.mktemp("long") / "tiny-en"
    result = tiffin("export", "tiffin/tiny-en", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """A minute and half an hour of sentences with long silences (Opus, 48 kHz: 0.9 MB for 30 min),
    five minutes as a 44.1 kHz stereo MP3, and an hour of FLAC (2.4 MB, over the server's limit)."""
    folder = tmp_path_factory.mktemp("long-media")
    sentences = spoken(16000)
    files = {"1 min": folder / "one.opus", "30 min": folder / "thirty.opus", "5 min": folder / "five.mp3",
             "1 h": folder / "hour.flac"}
    write_long(files["1 min"], 60, every=20, rate=48000, sentences=sentences)
    write_long(files["30 min"], 1800, every=EVERY, rate=48000, sentences=sentences)
    write_long(files["5 min"], 300, every=60, rate=44100, channels=2, sentences=sentences)
    write_long(files["1 h"], 3600, every=600, sentences=sentences)
    return files


@pytest.fixture(scope="module")
def predictor(artifact):
    from tiffin.host import open_artifact

    return open_artifact(artifact, windows_per_call=1)[0]


def reference(predictor, path: Path) -> str:
    """The transcript as tiffin computed it before streaming: the whole recording in memory, every
    window run, stitched, decoded."""
    from tiffin.audio_io import load_audio

    return predictor.decode(predictor.recording_logits(load_audio(path, predictor.spec.sample_rate)))


class Counting:
    """A predictor's logits callable that counts the windows it is given."""

    def __init__(self, logits):
        self.logits, self.windows = logits, 0

    def __call__(self, waves):
        self.windows += len(waves)
        return self.logits(waves)


def test_half_an_hour_streams_in_the_memory_of_a_minute_and_says_what_the_whole_did(predictor, media, monkeypatch):
    monkeypatch.setenv("TIFFIN_MAX_AUDIO_SECONDS", "2400")
    predictor.predict_file(media["1 min"])  # sessions and arenas warmed: what is measured next is the recording's
    reset_peak()
    short = predictor.predict_file(media["1 min"])
    minute = peak_mb()
    counting = Counting(predictor.logits)
    monkeypatch.setattr(predictor, "logits", counting)
    reset_peak()
    started = time.monotonic()
    long = predictor.predict_file(media["30 min"], timestamps=True)
    took, half_hour = time.monotonic() - started, peak_mb()
    # the old path held the recording (115 MB at 16 kHz) and every window's logits; streaming holds a window
    assert half_hour - minute < 40, f"30 min peaked {half_hour:.0f} MB, 1 min {minute:.0f} MB"
    assert long["duration_s"] == 1800.0 and short["duration_s"] == 60.0
    windows = int(np.ceil((1800 - 30) / 20)) + 1
    assert counting.windows < windows * 0.6, (counting.windows, windows)  # silent windows skipped
    monkeypatch.setattr(predictor, "logits", counting.logits)
    assert long["text"] == reference(predictor, media["30 min"]), "streaming changed the transcript"
    # timestamps in the recording's time, skipped windows counted: words only where a sentence was said
    said = [k * EVERY for k in range(int(1800 / EVERY))]
    # each word starts where a sentence is said (a greedy word ends at the model's next "|", so one
    # the model left open runs on to the next sentence; the embedded model also reads a letter or two
    # into the recording's last silence)
    for w in long["words"]:
        assert any(s - 0.1 <= w["start"] <= s + 4.5 for s in said) or w["start"] > 1800 - 20, w
    heard = {int(w["start"] // EVERY) for w in long["words"]}
    assert len(heard) >= 0.9 * len(said), sorted(heard)
    assert all(0 < w["conf"] <= 1 for w in long["words"])
    print(f"30 min: {took:.1f} s, peak {half_hour:.0f} MB (1 min: {minute:.0f} MB), {counting.windows} of {windows} windows")


def test_skipping_silence_changes_nothing_and_keep_silence_runs_every_window(predictor, media):
    import tiffin.api as api

    counting = Counting(predictor.logits)
    predictor.logits = counting
    try:
        skipped = api._predict(predictor, [media["5 min"]], 5, 1, False, {})[0]
        run_skipping, counting.windows = counting.windows, 0
        kept = api._predict(predictor, [media["5 min"]], 5, 1, False, {"keep_silence": True})[0]
        run_all = counting.windows
    finally:
        predictor.logits = counting.logits
    assert run_all == int(np.ceil((300 - 30) / 20)) + 1 and run_skipping < run_all
    assert skipped["text"] == kept["text"] == reference(predictor, media["5 min"])
    assert predictor.silence_dbfs is not None  # restored after keep_silence


def test_predict_cli_streams_long_files_and_says_the_limit_in_one_line(artifact, media, monkeypatch):
    monkeypatch.setenv("TIFFIN_MAX_AUDIO_SECONDS", "1")  # --limit sets it for the process: restored after
    result = tiffin("predict", artifact, media["1 h"], "--limit", "audio-seconds=1800")
    assert result.exit_code == 1
    assert "TIFFIN_MAX_AUDIO_SECONDS" in result.output and len(result.output.strip().splitlines()) == 1
    monkeypatch.setenv("TIFFIN_MAX_AUDIO_SECONDS", "14400")
    result = tiffin("predict", artifact, media["1 h"], "--json")  # the default limit (4 h) takes an hour
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)[0]
    assert answer["duration_s"] == 3600.0 and answer["text"]


def _server_processes(url: str) -> list[int]:
    import psutil

    root = psutil.Process(SERVER_PIDS[url])
    return [root.pid, *(p.pid for p in root.children(recursive=True))]


def test_the_service_streams_half_an_hour_in_flat_memory_and_refuses_an_hour_from_its_header(
        artifact, media, predictor, tmp_path, monkeypatch):
    monkeypatch.setenv("TIFFIN_MAX_AUDIO_SECONDS", "2400")
    expected = {k: predictor.predict_file(media[k])["text"] for k in ("1 min", "30 min")}
    with running_server(artifact, tmp_path, TIFFIN_MAX_AUDIO_SECONDS=2400) as url:
        status, body = post_multipart(f"{url}/transcribe", "audio", media["1 min"].read_bytes(), "one.opus")
        assert status == 200 and body["text"] == expected["1 min"], body
        pids = _server_processes(url)
        for pid in pids:
            reset_peak(pid)
        status, body = post_multipart(f"{url}/transcribe", "audio", media["1 min"].read_bytes(), "one.opus")
        minute = {pid: peak_mb(pid) for pid in pids}
        for pid in pids:
            reset_peak(pid)
        status, body = post_multipart(f"{url}/transcribe", "audio", media["30 min"].read_bytes(), "thirty.opus")
        assert status == 200 and body["text"] == expected["30 min"] and body["duration_s"] == 1800.0
        grown = {pid: peak_mb(pid) - minute[pid] for pid in pids}
        assert max(grown.values()) < 40, grown  # each process: the API worker, the model worker, the server
        started = time.monotonic()
        status, body = post_multipart(f"{url}/transcribe", "audio", media["1 h"].read_bytes(), "hour.flac")
        assert status == 422 and "TIFFIN_MAX_AUDIO_SECONDS" in body["error"], body
        assert time.monotonic() - started < 5  # from the header: nothing decoded


@pytest.mark.long
def test_two_hours_cost_what_half_an_hour_costs(artifact, predictor, media, tmp_path, monkeypatch):
    """`make test-long`: two hours (FLAC, 16 kHz) through the Python API and the CLI, the transcript
    equal to the old path's, peak RSS flat against half an hour."""
    two_hours = tmp_path / "two.flac"
    write_long(two_hours, 7200, every=EVERY, sentences=spoken(16000))
    monkeypatch.setenv("TIFFIN_MAX_AUDIO_SECONDS", "7200")
    predictor.predict_file(media["1 min"])
    reset_peak()
    half = predictor.predict_file(media["30 min"])
    half_peak = peak_mb()
    reset_peak()
    whole = predictor.predict_file(two_hours)
    two_peak = peak_mb()
    assert two_peak - half_peak < 40, (two_peak, half_peak)
    assert whole["duration_s"] == 7200.0 and half["text"]
    assert whole["text"] == reference(predictor, two_hours)
    result = tiffin("predict", artifact, two_hours, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["text"] == whole["text"]
