"""Media that attacks the decoders (issue 27): files that name other files, rates that used to cost
gigabytes, headers that lie about their length, frames and frame counts past the limits. Each
attack comes in variants the test generates, through the decoders every stage shares, through
`tiffin predict` and through the services called as BentoML calls them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import service, tiffin, write_frames
from tiffin.errors import MediaError

ROOT = Path(__file__).resolve().parents[1]


# --- a client names a server file ----------------------------------------------------------------

def _playlists(target: Path, folder: Path) -> dict[str, str]:
    """Texts FFmpeg would follow to `target`: HLS with an absolute, a relative and a file: URL
    entry, an ffconcat script, an SDP-less image pattern, a plain M3U."""
    relative = os.path.relpath(target, folder)
    return {
        "hls-absolute": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n",
        "hls-relative": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{relative}\n#EXT-X-ENDLIST\n",
        "hls-file-url": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nfile:{target}\n#EXT-X-ENDLIST\n",
        "ffconcat": f"ffconcat version 1.0\nfile '{target}'\n",
        "m3u": f"#EXTM3U\n#EXTINF:10,secret\n{target}\n",
    }


SUFFIXES = (".m3u8", ".mp4", ".wav", ".mp3", ".mkv", ".txt", ".ffconcat")


def _opened_while(fifo: Path, work) -> bool:
    """Whether anything opened `fifo` for reading while `work()` ran: the listed target is a FIFO,
    so a reader shows itself (our non-blocking open for writing succeeds only when one waits)."""
    done, opened = threading.Event(), []

    def run():
        try:
            work()
        except Exception:  # the decoders' verdict is checked by the callers; here only the open matters
            pass
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not done.is_set() and time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.005)
            continue
        opened.append(True)
        os.close(fd)  # the reader sees end of file and goes on
    thread.join(5)
    return bool(opened)


@pytest.mark.parametrize("kind", ["hls-absolute", "hls-relative", "hls-file-url", "ffconcat", "m3u"])
def test_a_playlist_never_opens_the_file_it_names(tmp_path, kind):
    """Whatever a file is called, text that lists a server path is refused by every decoder and
    the path is never opened (the target is a FIFO that reports any reader)."""
    from tiffin.audio_io import audio_duration, load_audio, read_audio
    from tiffin.video_io import decode_clip, probe

    secret = tmp_path / "server" / "secret.wav"
    secret.parent.mkdir()
    os.mkfifo(secret)
    text = _playlists(secret, tmp_path)[kind]
    for suffix in SUFFIXES:
        upload = tmp_path / f"upload{suffix}"
        upload.write_text(text)
        for name, decode in [("probe", lambda: probe(upload)), ("decode_clip", lambda: decode_clip(upload, 0, 1, 2)),
                             ("read_audio", lambda: read_audio(upload)), ("load_audio", lambda: load_audio(upload, 16000)),
                             ("audio_duration", lambda: audio_duration(upload))]:
            assert not _opened_while(secret, decode), (kind, suffix, name)
        for decode in (lambda: probe(upload), lambda: load_audio(upload, 16000)):
            with pytest.raises(MediaError):
                decode()


def test_services_and_predict_refuse_playlists_alike_whether_the_target_exists(monkeypatch, artifacts, recordings,
                                                                                videos, tmp_path):
    """The attack as it was made: a playlist upload naming a server recording or video. Refused
    with the same status and reason whether the named file exists or not (no existence oracle)."""
    speech = service(monkeypatch, "speech", artifacts["speech"])
    video = service(monkeypatch, "video", artifacts["video"])
    targets = {"speech": recordings[0], "video": videos[0]}
    for field, svc, call in (("speech", speech, lambda s, p: s.transcribe(p)),
                             ("video", video, lambda s, p: s.classify(p, top_k=1))):
        answers: dict[tuple[str, str], set] = {}
        for target in (targets[field], tmp_path / "missing.wav"):
            for kind, text in _playlists(target, tmp_path).items():
                for suffix in (".m3u8", ".mp4", ".wav"):
                    upload = tmp_path / f"upload{suffix}"
                    upload.write_text(text)
                    answer = call(svc, upload)
                    assert not isinstance(answer, dict), (field, kind, suffix, answer)  # never an answer
                    answers.setdefault((kind, suffix), set()).add((answer.status_code, json.loads(answer.body)["error"]))
        for variant, seen in answers.items():  # the same answer whether the named file exists or not
            assert len(seen) == 1 and next(iter(seen))[0] == 422, (field, variant, seen)
            assert str(tmp_path) not in next(iter(seen))[1]
    playlist = tmp_path / "listed.m3u8"
    playlist.write_text(_playlists(recordings[0], tmp_path)["hls-absolute"])
    result = tiffin("predict", artifacts["speech"], playlist, "--json")
    assert result.exit_code == 1 and "not an audio or video container" in json.loads(result.stdout)[0]["error"]


def test_images_and_gifs_are_not_video(tmp_path):
    import av

    from tiffin.video_io import probe

    gif = tmp_path / "anim.gif"
    with av.open(str(gif), "w") as out:
        stream = out.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "rgb8"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 60, np.uint8), format="rgb24")
            for packet in stream.encode(frame.reformat(format="rgb8")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    for name in ("anim.gif", "anim.mp4"):
        (tmp_path / name).write_bytes(gif.read_bytes())
        with pytest.raises(MediaError, match="not an audio or video container"):
            probe(tmp_path / name)


def test_only_regular_files_are_media(tmp_path):
    """A FIFO would block a decoder forever, a folder or a device is no file: refused at once."""
    from tiffin.audio_io import load_audio
    from tiffin.video_io import probe

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    (tmp_path / "folder.mp4").mkdir()
    for path in (fifo, tmp_path / "folder.mp4", Path("/dev/zero")):
        for decode in (lambda: probe(path), lambda: load_audio(path, 16000)):
            started = time.monotonic()
            with pytest.raises(MediaError, match="not a regular file"):
                decode()
            assert time.monotonic() - started < 1


# --- resampling costs memory in proportion to the audio --------------------------------------------

def _peak_rss_mb(code: str) -> float:
    """Peak RSS (MB) of a fresh interpreter running `code` after importing tiffin.audio_io, less
    the peak right after that import."""
    script = ("import resource, tiffin.audio_io as a, numpy as np, soundfile as sf\n"
              "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n" + code +
              "\nprint((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.split()[-1])


@pytest.mark.parametrize("rate", [4001, 8001, 22051, 48001, 96001])
def test_an_odd_sample_rate_costs_memory_of_the_audio_not_of_the_ratio(tmp_path, rate):
    """A 444-byte WAV at 4001 Hz used to build a 16000 x 4015 float64 table (2.5 GB). Now a rate
    whose table would be large goes through soxr: a few MB, and the tone keeps its pitch."""
    wav = tmp_path / f"odd-{rate}.wav"
    seconds = 2
    t = np.arange(rate * seconds) / rate
    sf.write(wav, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    grown = _peak_rss_mb(f"w = a.load_audio({str(wav)!r}, 16000); assert len(w) == {16000 * seconds}, len(w)")
    assert grown < 40, f"{rate} Hz: {grown:.0f} MB"
    from tiffin.audio_io import load_audio

    wave = load_audio(wav, 16000)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440) < 2


def test_common_rates_keep_the_sinc_resampler_and_stream_equals_whole():
    """8, 11.025, 22.05, 44.1, 48 kHz keep torchaudio's kernel (tests/test_audio_and_text.py holds it
    to torchaudio); pushed block by block, as files decode, it gives the same samples."""
    from tiffin.audio_io import Resampler, resample

    rng = np.random.default_rng(0)
    for rate in (8000, 11025, 22050, 44100, 48000):
        wave = rng.standard_normal(rate * 2 + 77).astype(np.float32)
        assert Resampler(rate, 16000).kernel is not None
        stream = Resampler(rate, 16000)
        pieces = [stream.push(wave[i : i + 1152]) for i in range(0, len(wave), 1152)] + [stream.flush()]
        whole = resample(wave, rate, 16000)
        streamed = np.concatenate(pieces)
        assert np.array_equal(streamed, whole), rate
    assert Resampler(4001, 16000).kernel is None  # soxr


# --- samples are bounded after downmix and resample; decoding stops at the limit ----------------------

def test_a_small_flac_of_many_channels_at_192khz_costs_the_samples_at_16khz(tmp_path):
    """150 s x 192 kHz x 8 channels of silence is a small FLAC and 0.9 GB of float32 at its own
    rate: decoded block by block, mixed down and resampled as it comes, it costs what 150 s at
    16 kHz costs (9.6 MB)."""
    flac = tmp_path / "wide.flac"
    with sf.SoundFile(flac, "w", 192000, 8, format="FLAC") as out:
        block = np.zeros((192000, 8), np.float32)
        for _ in range(150):
            out.write(block)
    assert flac.stat().st_size < 2_000_000
    grown = _peak_rss_mb(f"w = a.load_audio({str(flac)!r}, 16000); assert len(w) == 150 * 16000")
    assert grown < 200, f"{grown:.0f} MB"


def _flac_declaring(path: Path, declared_samples: int) -> None:
    """Rewrite a FLAC's STREAMINFO total-samples field (36 bits) to `declared_samples`."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    info = 8  # 4 magic + 4 block header; STREAMINFO bytes 13-17 hold rate(20) channels(3) bps(5) total(36)
    packed = int.from_bytes(data[info + 10 : info + 18], "big")
    packed = (packed & ~((1 << 36) - 1)) | declared_samples
    data[info + 10 : info + 18] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))


def test_a_flac_that_claims_one_second_and_holds_an_hour_stops_at_the_limit(tmp_path, monkeypatch):
    flac = tmp_path / "liar.flac"
    with sf.SoundFile(flac, "w", 8000, 1, format="FLAC") as out:
        for _ in range(60):
            out.write(np.zeros(8000 * 60, np.float32))
    _flac_declaring(flac, 8000)
    from tiffin.audio_io import audio_duration, load_audio

    assert audio_duration(flac) < 2  # the lie passes the header check
    monkeypatch.setenv("TIFFIN_MAX_AUDIO_SECONDS", "30")
    started = time.monotonic()
    with pytest.raises(MediaError, match="TIFFIN_MAX_AUDIO_SECONDS"):
        load_audio(flac, 16000)
    fast = time.monotonic() - started
    monkeypatch.setenv("TIFFIN_MAX_AUDIO_SECONDS", "7200")
    started = time.monotonic()
    assert len(load_audio(flac, 16000)) == 3600 * 16000
    assert fast < (time.monotonic() - started) / 10  # stopped after 30 s of audio, not after the hour


# --- video: frames and frame counts past the limits ------------------------------------------------

@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "many.mp4"
    frames = np.zeros((300, 240, 320, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(300, dtype=np.uint8)[:, None, None]
    write_frames(path, frames, fps=30)
    return path


@pytest.mark.parametrize("limit, value, words", [
    ("TIFFIN_MAX_VIDEO_PIXELS", str(320 * 240 - 1), "frames are larger than the limit"),
    ("TIFFIN_MAX_DECODE_PIXELS", str(320 * 240 * 20), "pixels x frames"),
    ("TIFFIN_MAX_VIDEO_SECONDS", "5", "longer than the limit"),
    ("TIFFIN_MAX_DECODE_SECONDS", "0.001", "took longer than the limit"),
])
def test_video_limits_hold_in_predict_the_services_and_training_readers(monkeypatch, artifacts, long_video, limit,
                                                                        value, words):
    """The same TIFFIN_MAX_* settings bound `tiffin predict`, the decoders training reads through
    and the service; `--limit` raises one for a command."""
    from tiffin.video_io import decode_clip

    monkeypatch.setenv(limit, value)
    result = tiffin("predict", artifacts["video"], long_video, "--json")
    assert result.exit_code == 1 and words in json.loads(result.stdout)[0]["error"] and limit in result.stdout
    if limit != "TIFFIN_MAX_VIDEO_SECONDS":  # a clip decodes without measuring the video's length
        with pytest.raises(MediaError, match=limit):
            decode_clip(long_video, 0.0, 9.0, 8)  # a 9 s clip: about 250 frames decode
    answer = service(monkeypatch, "video", artifacts["video"]).classify(long_video, top_k=1)
    assert answer.status_code == 422 and words in json.loads(answer.body)["error"]
    name = next(n for n, lim in __import__("tiffin.limits", fromlist=["LIMITS"]).LIMITS.items() if lim.env == limit)
    raised = tiffin("predict", artifacts["video"], long_video, "--json", "--limit", f"{name}=1000000000000")
    assert raised.exit_code == 0, raised.output


def test_decoding_stops_at_the_decode_budget(monkeypatch, long_video):
    """Frames are charged as they come out of the decoder, before they are converted: a budget of
    20 frames stops decoding at the 21st, where the 9 s clip needs about 250."""
    from tiffin.limits import DecodeBudget
    from tiffin.video_io import decode_clip

    charged = []
    real = DecodeBudget.frame
    monkeypatch.setattr(DecodeBudget, "frame", lambda self, w, h: charged.append(1) or real(self, w, h))
    decode_clip(long_video, 0.0, 9.0, 8)
    unlimited, charged[:] = len(charged), []
    monkeypatch.setenv("TIFFIN_MAX_DECODE_PIXELS", str(320 * 240 * 20))
    with pytest.raises(MediaError, match="TIFFIN_MAX_DECODE_PIXELS"):
        decode_clip(long_video, 0.0, 9.0, 8)
    assert len(charged) == 21 and unlimited > 200, (len(charged), unlimited)


def test_a_bad_limit_value_is_one_line(artifacts, long_video):
    for args in (["--limit", "video-seconds=abc"], ["--limit", "frames=3"], ["--limit", "video-seconds"]):
        result = tiffin("predict", artifacts["video"], long_video, *args)
        assert result.exit_code == 2 and ("--limit" in result.output or "TIFFIN_MAX" in result.output), result.output
        assert "Traceback" not in result.output


def test_the_model_worker_returns_memory_after_a_large_batch(artifacts):
    """ONNX Runtime's arena kept the largest batch's buffers for good (a 16-window batch of the tiny
    speech model left a worker at 3.9 GB); the served session gives them back after each run."""
    script = f"""
import numpy as np, psutil
from tiffin.serve.served_model import ServedModel
from tiffin.serve.settings import read_settings
model = ServedModel(read_settings({{"TIFFIN_ARTIFACT": {str(artifacts["speech"])!r}}}), "speech-recognition")
rss = lambda: psutil.Process().memory_info().rss / 2**20
model(np.zeros((1, 16000), np.float32), np.array([16000]))
base = rss()
model(np.zeros((16, 480000), np.float32), np.array([480000] * 16))
print(rss() - base)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) < 300, out.stdout
