"""serve/: BentoML services over ONNX Runtime, called directly, over real HTTP, and built into a bento."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tarfile
import tempfile
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import (ROOT, SERVER_PIDS, concurrently, post_multipart, predict_json, running_server,
                           send_request, service, slow_video, tiffin, wait_until)
from tests.media_corpus import LIMITS as CORPUS_LIMITS, OK
from tests.speech_media import utterance


# --- torch-free ------------------------------------------------------------------------------

def test_serving_imports_no_torch(artifacts, videos, recordings):
    code = f"""
import os, sys
from pathlib import Path
os.environ["TIFFIN_ARTIFACT"] = {str(artifacts['video'])!r}
from tiffin.serve.video import VideoClassifier
print(VideoClassifier().classify(Path({str(videos[0])!r}), top_k=1)["labels"][0]["label"])
os.environ["TIFFIN_ARTIFACT"] = {str(artifacts['speech'])!r}
from tiffin.serve.speech import SpeechRecognizer
print(repr(SpeechRecognizer().transcribe(Path({str(recordings[0])!r}))["text"]))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning", "pytorch_lightning", "transformers", "torchaudio", "torchvision"))
print("HEAVY", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


# torch, Lightning and transformers cannot be imported in the process (an import raises), as where
# only the base install and onnxruntime are
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "pytorch_lightning", "lightning", "transformers", "torchaudio",
                                  "torchvision", "pytorchvideo", "onnx"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
sys.argv = ["tiffin", *sys.argv[1:]]
from tiffin.cli import main
main()
"""


def test_predict_and_evaluate_an_onnx_artifact_without_torch(artifacts, checkpoints, motion_dataset, videos,
                                                             recordings):
    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    blocked = run("predict", checkpoints["video"], videos[0])  # the blocker works: a checkpoint needs torch
    assert blocked.returncode == 2 and "pip install 'tiffin[train]'" in blocked.stderr, blocked.stderr[-2000:]
    assert len(blocked.stderr.strip().splitlines()) == 1
    for task, files in (("video", videos), ("speech", recordings)):
        got = run("predict", artifacts[task], *files, "--json")
        assert got.returncode == 0, got.stderr[-2000:]
        assert json.loads(got.stdout) == predict_json(artifacts[task], files)
    video = run("evaluate", artifacts["video"], motion_dataset)
    assert video.returncode == 0, video.stderr[-2000:]
    assert json.loads(video.stdout) == json.loads(tiffin("evaluate", artifacts["video"], motion_dataset).stdout)
    speech = run("evaluate", artifacts["speech"], checkpoints["clips"].parent / "train.csv")
    assert speech.returncode == 0, speech.stderr[-2000:]
    assert json.loads(speech.stdout)["utterances"] == 8


# --- BentoML patches --------------------------------------------------------------------------

def test_bentoml_patches_are_active_on_the_pinned_bentoml(monkeypatch, artifacts):
    from importlib.metadata import version

    from tiffin.serve import bentoml_patches

    service(monkeypatch, "video", artifacts["video"])  # importing a service installs them
    assert bentoml_patches.active() == {name: True for name in bentoml_patches.PATCHES}
    # the patches are written against one BentoML: the one installed, pinned in both places
    pin = f"bentoml=={bentoml_patches.BENTOML_VERSION}"
    assert version("bentoml") == bentoml_patches.BENTOML_VERSION
    assert f'"{pin}"' in (ROOT / "pyproject.toml").read_text() and pin in (ROOT / "constraints.txt").read_text()


def test_a_bentoml_whose_code_differs_stops_the_server_with_one_line(artifacts):
    code = """
import sys
from bentoml._internal.server.http import traffic
exec("async def __call__(self, scope, receive, send):\\n    return await self.app(scope, receive, send)",
     ns := {})
traffic.TimeoutMiddleware.__call__ = ns["__call__"]  # what another BentoML release might hold
sys.argv = ["tiffin", "serve", sys.argv[1]]
from tiffin.cli import main
main()
"""
    out = subprocess.run([sys.executable, "-c", code, str(artifacts["video"])], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    assert "BentoML 1.4.40: tiffin's request_timers fix" in out.stderr and "install bentoml==1.4.40" in out.stderr
    direct = code.replace('sys.argv = ["tiffin", "serve", sys.argv[1]]\nfrom tiffin.cli import main\nmain()',
                          "import tiffin.serve.video")
    out = subprocess.run([sys.executable, "-c", direct], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "PatchMismatch: BentoML 1.4.40: tiffin's request_timers fix" in out.stderr


# --- services called directly ----------------------------------------------------------------

def test_video_answers_equal_predict(monkeypatch, artifacts, videos):
    svc = service(monkeypatch, "video", artifacts["video"], TIFFIN_CLIPS=2)
    expected = predict_json(artifacts["video"], videos, "--top-k", "3", "--clips", "2")
    for file, want in zip(videos, expected):
        got = svc.classify(file, top_k=3)
        assert got["labels"] == want["labels"] and got["clips"] == 2, file
        assert got["duration_s"] > 0


def test_speech_answers_equal_predict(monkeypatch, artifacts, recordings):
    svc = service(monkeypatch, "speech", artifacts["speech"])
    expected = predict_json(artifacts["speech"], recordings)
    assert [svc.transcribe(f)["text"] for f in recordings] == [e["text"] for e in expected]
    assert [svc.transcribe(f)["duration_s"] for f in recordings] == [e["duration_s"] for e in expected]


def test_serving_preprocessing_equals_training(monkeypatch, artifacts, motion_dataset, recordings):
    """The clip a served request feeds the model is the clip validation trained on, and the
    waveform is the one the speech dataset gives; the served logits equal PyTorch's on them."""
    import torch

    from tiffin.export.source_model import load_source, source_model
    from tiffin.serve.speech import SpeechModel
    from tiffin.serve.video import VideoModel
    from tiffin.audio_io import read_audio, resample
    from tiffin.inference import video_clips
    from tiffin.spec import VideoSpec
    from tiffin.train.speech_data import SpeechDataset, Utterance
    from tiffin.train.video_data import VideoClipDataset, discover_folder, probe_all

    meta = json.loads((artifacts["video"] / "tiffin.json").read_text())
    spec = VideoSpec.from_dict(meta["preprocessing"])
    found, _ = probe_all(discover_folder(motion_dataset))
    dataset = VideoClipDataset(found[:6], list(spec.labels), spec, sampler="constant_clips_per_video", train=False)
    served = np.stack([video_clips(v.path, spec, 1)[0] for v in found[:6]])
    trained = np.stack([dataset[i]["video"].numpy() for i in range(6)])
    np.testing.assert_array_equal(served, trained)

    monkeypatch.setenv("TIFFIN_ARTIFACT", str(artifacts["video"]))
    _, loaded, _ = load_source(source_model(artifacts["video"], meta))
    with torch.inference_mode():
        reference = loaded.net(torch.from_numpy(trained)).numpy()
    np.testing.assert_allclose(VideoModel().logits(served), reference, atol=1e-4, rtol=1e-3)

    speech_meta = json.loads((artifacts["speech"] / "tiffin.json").read_text())
    rate = speech_meta["preprocessing"]["sample_rate"]
    dataset = SpeechDataset([Utterance(Path(f), "", (), 0) for f in recordings], rate)
    for i, file in enumerate(recordings):  # 16/22.05/44.1 (stereo)/8 kHz files
        np.testing.assert_array_equal(resample(*read_audio(file), rate), dataset[i]["wave"].numpy())
    monkeypatch.setenv("TIFFIN_ARTIFACT", str(artifacts["speech"]))
    _, speech_loaded, _ = load_source(source_model(artifacts["speech"], speech_meta))
    wave = resample(*read_audio(recordings[2]), rate)
    with torch.inference_mode():
        reference = speech_loaded.net(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))[0].numpy()
    np.testing.assert_allclose(SpeechModel().logits([wave])[0], reference, atol=1e-4, rtol=1e-3)


def test_speech_batched_answer_equals_alone(monkeypatch, artifacts, recordings):
    monkeypatch.setenv("TIFFIN_ARTIFACT", str(artifacts["speech"]))
    from tiffin.serve.speech import SpeechModel
    from tiffin.audio_io import load_audio

    model = SpeechModel()
    waves = [load_audio(f, 16000) for f in recordings[:5]]
    assert len({len(w) for w in waves}) > 1  # unequal lengths: the batch is padded
    together = model.logits(waves)
    for wave, batched in zip(waves, together):
        alone = model.logits([wave])[0]
        assert batched.shape == alone.shape
        np.testing.assert_allclose(batched, alone, atol=1e-4, rtol=1e-3)


def test_long_audio_is_windowed_like_predict(monkeypatch, artifacts, tmp_path):
    """A recording longer than the artifact's window streams through it window by window (the
    model worker batches windows across requests), stitched and decoded exactly as `tiffin predict`
    does it."""
    artifact = tmp_path / "short-window"
    shutil.copytree(artifacts["speech"], artifact)
    meta = json.loads((artifact / "tiffin.json").read_text())
    meta["preprocessing"].update(chunk_seconds=1.0, stride_seconds=0.2)
    (artifact / "tiffin.json").write_text(json.dumps(meta))
    words = ["one", "two", "red", "cat", "go", "up"] * 3
    long = tmp_path / "long.wav"
    sf.write(long, utterance(words, 16000), 16000)
    assert sf.info(long).duration > 3

    svc = service(monkeypatch, "speech", artifact, TIFFIN_MAX_BATCH=2)
    calls = []
    real = svc.model.logits
    monkeypatch.setattr(svc.model, "logits", lambda waves: calls.append(len(waves)) or real(waves))
    got = svc.transcribe(long)
    # one window per call as the recording streams: a call's cost is one window's, whatever the length
    assert len(calls) >= 3 and set(calls) == {1}, calls
    assert got["text"] == predict_json(artifact, [long])[0]["text"]


def test_media_corpus_gets_answers_or_4xx_reasons(monkeypatch, artifacts, media_corpus, corpus_predictions):
    """Every case of tests/media_corpus.py, called directly: odd media answered as `tiffin predict`
    answers it, bad media refused with its status and reason."""
    video = service(monkeypatch, "video", artifacts["video"], **CORPUS_LIMITS)
    speech = service(monkeypatch, "speech", artifacts["speech"], **CORPUS_LIMITS)
    for case, path in media_corpus:
        answer = video.classify(path, top_k=2) if case.field == "video" else speech.transcribe(path)
        check_answer(case, path, answer if isinstance(answer, dict) else (answer.status_code, json.loads(answer.body)),
                     corpus_predictions)


def check_answer(case, path: Path, answer, predictions: dict) -> None:
    """A service's answer to a corpus case: predict's answer (status OK), or the case's status and reason."""
    if case.status == OK:
        got = answer[1] if isinstance(answer, tuple) else answer
        assert not isinstance(answer, tuple) or answer[0] == 200, (case.name, answer)
        key = "labels" if case.field == "video" else "text"
        assert got[key] == predictions[path][key], (case.name, got, predictions[path])
        assert got.get("warnings") == predictions[path].get("warnings"), (case.name, got, predictions[path])
        assert bool(case.warns) == bool(got.get("warnings")) and all(case.warns in w for w in got.get("warnings", []))
    else:
        status, body = answer
        assert status == case.status and case.words in body["error"], (case.name, status, body)
        assert str(path.parent) not in body["error"]  # never a server path in an answer


def test_bad_settings_are_one_line_errors(artifacts, checkpoints, tmp_path):
    from tiffin.serve.settings import read_settings
    from tiffin.errors import TiffinError

    for env, words in [({"TIFFIN_MAX_UPLOAD_MB": "lots"}, "TIFFIN_MAX_UPLOAD_MB"), ({"TIFFIN_BATCHING": "yes"}, "TIFFIN_BATCHING"),
                       ({"TIFFIN_MAX_BATCH": "1"}, ">= 2"), ({"TIFFIN_DEVICE": "tpu"}, "TIFFIN_DEVICE")]:
        with pytest.raises(TiffinError, match=words):
            read_settings(env)
    torchscript = tmp_path / "ts"
    assert tiffin("export", checkpoints["video"], "--format", "torchscript", "--out", torchscript).exit_code == 0
    for artifact, words in [(torchscript, "--format onnx"), (tmp_path, "not an artifact")]:
        for command in ("serve", "build"):
            result = tiffin(command, artifact)
            assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output


# --- a real server -----------------------------------------------------------------------------

def send_corpus(url: str, field: str, media_corpus: list, predictions: dict, fields: dict[str, str] | None = None) -> int:
    """POST every corpus case meant for `field`; each must be answered as predict answers it or
    refused with its status and reason. How many were sent."""
    tried = 0
    for case, path in media_corpus:
        if case.field == field:
            check_answer(case, path, post_multipart(url, field, path.read_bytes(), path.name, fields), predictions)
            tried += 1
    return tried


def test_video_server_over_http(artifacts, videos, media_corpus, corpus_predictions, tmp_path):
    import bentoml
    import httpx

    expected = {str(e["file"]): e["labels"] for e in predict_json(artifacts["video"], videos, "--top-k", "2")}
    # the server's TMPDIR, where BentoML keeps uploads during a request (short: it holds unix sockets)
    server_tmp = Path(tempfile.mkdtemp(prefix="tiffin-"))
    with running_server(artifacts["video"], tmp_path, TMPDIR=server_tmp, **CORPUS_LIMITS) as url:
        for path in ("/livez", "/readyz", "/"):
            assert urllib.request.urlopen(url + path).status == 200
        assert "/classify" in json.loads(urllib.request.urlopen(url + "/docs.json").read())["paths"]

        with bentoml.SyncHTTPClient(url) as client:
            for file in videos[:3]:
                assert client.classify(video=file, top_k=2)["labels"] == expected[str(file)]
        status, body = post_multipart(url + "/classify", "video", videos[3].read_bytes(), videos[3].name, {"top_k": "2"})
        assert status == 200 and body["labels"] == expected[str(videos[3])]

        # concurrent requests are batched into shared model calls; each still gets its own answer
        answers = concurrently(url + "/classify", "video", videos, {"top_k": "2"})
        assert [(a[0], a[1]["labels"]) for a in answers] == [(200, expected[str(f)]) for f in videos]

        tried = send_corpus(url + "/classify", "video", media_corpus, corpus_predictions, {"top_k": "2"})
        oversize = np.random.default_rng(1).bytes(2100 * 1024)
        got, body = post_multipart(url + "/classify", "video", oversize)
        assert got == 413 and "TIFFIN_MAX_UPLOAD_MB" in body["error"]
        # no Content-Length (chunked): the limit holds while the body streams in
        body = (b"--b0\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n\r\n" + oversize
                + b"\r\n--b0--\r\n")
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        streamed = httpx.post(url + "/classify", content=chunks, headers={"Content-Type": "multipart/form-data; boundary=b0"})
        assert streamed.status_code == 413 and "TIFFIN_MAX_UPLOAD_MB" in streamed.json()["error"]
        # a file field given as a string is never fetched as a URL or read as a path
        for value in ("http://127.0.0.1:9/x.mp4", "/etc/passwd"):
            got = httpx.post(url + "/classify", files={"video": (None, value)})
            assert got.status_code == 400 and "uploaded file" in got.json()["error"]
        malformed = httpx.post(url + "/classify", content=oversize[:1000], headers={"Content-Type": "multipart/form-data"})
        assert malformed.status_code == 400 and "malformed" in malformed.json()["error"]
        for request, status in [
            (urllib.request.Request(url + "/classify", data=b'{"video": "/etc/passwd"}', method="POST",
                                    headers={"Content-Type": "application/json"}), 400),  # never a server path
            (urllib.request.Request(url + "/classify", data=b"\x80\x04N.", method="POST",
                                    headers={"Content-Type": "application/vnd.bentoml+pickle"}), 415),  # never pickle
        ]:
            assert send_request(request)[0] == status
        assert post_multipart(url + "/classify", "wrong_field", b"x")[0] == 400
        assert post_multipart(url + "/classify", "video", videos[0].read_bytes(), fields={"top_k": "0"})[0] == 400
        # a JSON `true` is not a count (pydantic alone took it as top_k=1; schemathesis found it)
        flag = httpx.post(url + "/classify", files={"video": ("a.mp4", videos[0].read_bytes()),
                                                     "top_k": (None, b"true", "application/json")})
        assert flag.status_code == 400 and "top_k" in flag.json()["error"], flag.text
        assert tried == sum(case.field == "video" for case, _ in media_corpus)
        # the client's file name never becomes part of a path (BentoML alone answered the long one with a 500)
        for name in ("a" * 300 + ".mp4", "../../../etc/passwd", "x\x00y.mp4", "a/b/c.mp4", "..", "évidé.mp4"):
            status, body = post_multipart(url + "/classify", "video", videos[0].read_bytes(), name, {"top_k": "2"})
            assert status == 200 and body["labels"] == expected[str(videos[0])], (name, status, body)
        # uploads live only while their request does: BentoML empties its per-request folders just
        # after sending the answer, so the last request's file may outlive the response by a moment
        request_dirs = list(server_tmp.glob("bentoml-request-*"))
        assert request_dirs and wait_until(lambda: not [p for d in request_dirs for p in d.rglob("*")], seconds=10), \
            [p for d in request_dirs for p in d.rglob("*")]
        # still up and right after every refusal
        status, body = post_multipart(url + "/classify", "video", videos[0].read_bytes(), videos[0].name, {"top_k": "2"})
        assert status == 200 and body["labels"] == expected[str(videos[0])]
        metrics = urllib.request.urlopen(url + "/metrics").read().decode()
        codes = {line.split('http_response_code="')[1].split('"')[0] for line in metrics.splitlines()
                 if line.startswith("bentoml_service_request_total") and 'endpoint="/classify"' in line
                 and float(line.split()[-1]) > 0}
        assert {"200", "400", "413", "415", "422"} <= codes and not any(c.startswith("5") for c in codes), codes
    shutil.rmtree(server_tmp, ignore_errors=True)


def test_speech_server_over_http(artifacts, recordings, media_corpus, corpus_predictions, tmp_path):
    import bentoml

    expected = predict_json(artifacts["speech"], recordings)
    with running_server(artifacts["speech"], tmp_path, **CORPUS_LIMITS) as url:
        assert "/transcribe" in json.loads(urllib.request.urlopen(url + "/docs.json").read())["paths"]
        with bentoml.SyncHTTPClient(url) as client:
            assert [client.transcribe(audio=f)["text"] for f in recordings] == [e["text"] for e in expected]
        answers = concurrently(url + "/transcribe", "audio", recordings)
        assert [(a[0], a[1]["text"]) for a in answers] == [(200, e["text"]) for e in expected]
        tried = send_corpus(url + "/transcribe", "audio", media_corpus, corpus_predictions)
        assert post_multipart(url + "/transcribe", "audio", np.random.default_rng(2).bytes(2100 * 1024))[0] == 413
        assert tried == sum(case.field == "audio" for case, _ in media_corpus)
        status, body = post_multipart(url + "/transcribe", "audio", recordings[0].read_bytes(), recordings[0].name)
        assert status == 200 and body["text"] == expected[0]["text"]


def test_without_batching_the_api_worker_runs_the_model(artifacts, videos, recordings, tmp_path):
    import psutil

    # top_k: the video's form field and predict option; key: what the answer and predict share
    for task, files, route, field, top_k, key in [("video", videos[:4], "/classify", "video", ["2"], "labels"),
                                                  ("speech", recordings, "/transcribe", "audio", [], "text")]:
        expected = predict_json(artifacts[task], files, *(["--top-k", *top_k] if top_k else []))
        with running_server(artifacts[task], tmp_path, TIFFIN_BATCHING=0, TIFFIN_WORKERS=2) as url:
            workers = [" ".join(c.cmdline()) for c in psutil.Process(SERVER_PIDS[url]).children(recursive=True)]
            services = sorted(w.split("--service-name ")[1].split()[0] for w in workers if "--service-name" in w)
            assert services == [f"tiffin-{task}"] * 2, workers  # two API workers, no model worker
            answers = concurrently(url + route, field, files, {"top_k": k for k in top_k})
            assert [(a[0], a[1][key]) for a in answers] == [(200, e[key]) for e in expected]


def test_a_request_past_the_timeout_gets_504_and_the_server_goes_on(artifacts, recordings, tmp_path):
    """TIFFIN_TIMEOUT_S still holds with BentoML's timer replaced (serve/request_timers.py)."""
    t = np.arange(8000 * 60 * 10) / 8000  # 10 minutes of tone: seconds of decoding and model work
    long = tmp_path / "long.flac"
    sf.write(long, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000, subtype="PCM_16")
    expected = predict_json(artifacts["speech"], recordings[:1])[0]["text"]
    with running_server(artifacts["speech"], tmp_path, TIFFIN_TIMEOUT_S=1) as url:
        status, body = post_multipart(url + "/transcribe", "audio", long.read_bytes(), long.name)
        assert status == 504 and "1 seconds" in body["error"], (status, body)
        # the abandoned work runs on (a sync handler cannot be interrupted), then answers come back
        short = recordings[0].read_bytes()
        answered = lambda: post_multipart(url + "/transcribe", "audio", short, "a.wav")[1].get("text") == expected  # noqa: E731
        assert wait_until(answered, seconds=120)


def test_requests_in_flight_at_sigterm_finish_with_200(artifacts, tmp_path):
    """SIGTERM to the server's main process alone, as `docker stop` sends it to PID 1: the requests
    already in flight are answered (200) and the server exits; without the drain_in_order patch the
    model worker left first and all of them were 503."""
    video = slow_video(tmp_path / "slow.mp4")
    done: list[tuple[int, float]] = []

    def send() -> None:
        status, _ = post_multipart(url + "/classify", "video", video.read_bytes(), video.name)
        done.append((status, time.monotonic()))

    with running_server(artifacts["video"], tmp_path, TIFFIN_CLIPS=48) as url:
        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        stopped_at = time.monotonic()
        os.kill(SERVER_PIDS[url], signal.SIGTERM)
        for t in threads:
            t.join(timeout=120)
        assert wait_until(lambda: not _alive(SERVER_PIDS[url]), 60)  # and then it exits
    assert [status for status, _ in done] == [200] * 4
    assert max(at for _, at in done) > stopped_at  # some were still in flight when SIGTERM came


def _alive(pid: int) -> bool:
    """Whether `pid` runs (an exited child of ours lingers as a zombie until it is waited for)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- the OpenAPI document ------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["video", "speech"])
def test_schemathesis_finds_the_openapi_document_true(artifacts, tmp_path, task):
    """schemathesis runs every check against /docs.json: statuses and bodies as documented, 405s
    with Allow, invalid input refused. The one failure accepted: a schema-valid upload (random
    bytes are a valid binary string) refused with 422 because it is not media."""
    import xml.etree.ElementTree as ET

    report = tmp_path / "junit.xml"
    with running_server(artifacts[task], tmp_path) as url:
        document = json.loads(urllib.request.urlopen(url + "/docs.json").read())
        route = "/classify" if task == "video" else "/transcribe"
        assert set(document["paths"][route]["post"]["responses"]) == {"200", "400", "413", "415", "422", "500",
                                                                      "503", "504"}
        st = Path(sys.executable).parent / "st"
        out = subprocess.run([str(st), "run", url + "/docs.json", "--checks", "all", "-n", "40", "--seed", "0",
                              "--continue-on-failure", "--no-color", "--report", "junit",
                              "--report-junit-path", str(report)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert "generated" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
    failures = [(case.get("name"), f.text or "") for case in ET.parse(report).iter("testcase") for f in case
                if f.tag in ("failure", "error")]
    for name, text in failures:
        checks = set(re.findall(r"^- (ST\d+) ", text, re.M))
        assert checks == {"ST202"} and "[422]" in text, (name, text[:3000])
    assert out.returncode in (0, 1)


# --- bento -------------------------------------------------------------------------------------

def stored_tag(tmp_path: Path) -> str:
    version = next((tmp_path / "bentoml" / "models" / "my-speech").glob("*/model.onnx")).parent.name
    return f"my-speech:{version}"


def test_build_makes_a_torch_free_bento(artifacts, tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    out = subprocess.run([sys.executable, "-m", "tiffin", "build", str(artifacts["speech"]), "--name", "my-speech"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tag = out.stdout.split()[1]
    assert tag.startswith("my-speech:")
    bento = tmp_path / "bentoml" / "bentos" / "my-speech" / tag.split(":")[1]
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().lower()
    assert {"onnxruntime", "av", "soundfile", "numpy"} <= {line.split(">")[0].split("=")[0] for line in requirements.split()}
    for heavy in ("torch", "lightning", "transformers", "pytorchvideo"):
        assert heavy not in requirements
    assert not list((bento / "src").rglob("*.py"))  # the code travels as tiffin's serving wheel
    wheels = list((bento / "env" / "python" / "wheels").glob("tiffin-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as wheel:
        packages = {Path(n).parent.as_posix() for n in wheel.namelist() if n.endswith(".py")}
    assert packages == {"tiffin", "tiffin/serve"}  # no tiffin.train, tiffin.export, CLI or weights
    manifest = (bento / "bento.yaml").read_text()
    assert "service: tiffin.serve.speech:SpeechRecognizer" in manifest and f"model: {stored_tag(tmp_path)}" in manifest
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "bentoml" in dockerfile and "FROM python:3.11-slim" in dockerfile  # BentoML's default base
    assert re.search(r"^HEALTHCHECK .*/readyz", dockerfile, re.M) and re.search(r"^USER bentoml$", dockerfile, re.M)
    stored = list((tmp_path / "bentoml" / "models" / "my-speech").glob("*/model.onnx"))
    assert len(stored) == 1 and (stored[0].parent / "tiffin.json").is_file()
    export = subprocess.run([sys.executable, "-m", "bentoml", "export", tag, str(tmp_path / "b.bento")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-2000:]
    with tarfile.open(tmp_path / "b.bento") as archive:  # what `bentoml containerize` ships: the model is inside
        names = archive.getnames()
    assert any(n.endswith("model.onnx") and "models/my-speech" in n for n in names)

    # the bento serves from its own model store, with no TIFFIN_ARTIFACT
    from benchmarks.load import started_server

    with started_server(["bentoml", "serve", tag], tmp_path / "bento.log", {**env, "TIFFIN_ARTIFACT": None},
                        cwd=tmp_path) as (url, _):
        wav = tmp_path / "a.wav"
        sf.write(wav, utterance(["red", "cat"]), 16000)
        status, body = post_multipart(url + "/transcribe", "audio", wav.read_bytes(), "a.wav")
        assert status == 200 and body["text"] == predict_json(artifacts["speech"], [wav])[0]["text"]


def test_a_gpu_bento_installs_onnxruntime_gpu_and_declares_its_gpu(artifacts, tmp_path):
    import yaml

    from tiffin.serve.commands import ONNXRUNTIME_GPU

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    out = subprocess.run([sys.executable, "-m", "tiffin", "build", str(artifacts["video"]), "--gpu"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    bento = tmp_path / "bentoml" / "bentos" / "tiffin-video" / out.stdout.split()[1].split(":")[1]
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().split()
    assert f"onnxruntime-gpu[cuda,cudnn]=={ONNXRUNTIME_GPU}" in requirements
    assert not any(r.startswith("onnxruntime==") for r in requirements)
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    services = {svc["name"]: svc["config"] for svc in manifest["services"]}
    assert services["tiffin-video-model"]["resources"] == {"gpu": 1}  # what a deployment schedules on
    assert "resources" not in services["tiffin-video"]  # the API workers decode on the CPU
    assert {"name": "TIFFIN_GPUS", "value": "1"} in [{k: e[k] for k in ("name", "value")} for e in manifest["envs"]]
    assert "ENV TIFFIN_GPUS=" in (bento / "env" / "docker" / "Dockerfile").read_text()


def test_containerize_without_a_docker_engine_is_one_line_and_stores_nothing(artifacts, tmp_path):
    home = tmp_path / "bentoml"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a docker client whose engine is down, as on a machine where dockerd is not started
    (bin_dir / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at "
                                    "unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    for path, words in ((str(bin_dir), "the Docker engine is not running"), ("/nonexistent", "no docker command here")):
        env = {**os.environ, "BENTOML_HOME": str(home), "PATH": f"{path}:{os.path.dirname(sys.executable)}"}
        out = subprocess.run([sys.executable, "-m", "tiffin", "build", str(artifacts["video"]), "--containerize"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and words in out.stderr and "apt-get install docker.io" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (home / "models").exists() or not any((home / "models").rglob("tiffin.json"))
    result = tiffin("build", artifacts["video"], "--image-tag", "x:1")
    assert result.exit_code == 2 and "--containerize" in result.output


def test_bentofile_packs_a_model_and_the_serving_wheel_pinned_as_tested():
    """A plain `make bento` (wheel, then `bentoml build`) packs the latest stored video model and
    tiffin's serving wheel, on the package versions constraints.txt pins."""
    import yaml

    import tiffin
    from tiffin.serve.commands import BENTOFILE
    from tiffin.serve.wheel import serving_wheel

    config = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert BENTOFILE.read_text() == (ROOT / "bentofile.yaml").read_text()  # the one the package ships
    assert config["models"] == ["tiffin-video:latest"] and config["service"] == "tiffin.serve.video:VideoClassifier"
    assert config["python"]["wheels"] == [f"dist/serving/tiffin-{tiffin.__version__}-py3-none-any.whl"]
    pins = dict(line.lower().split("==") for line in (ROOT / "constraints.txt").read_text().split()
                if "==" in line and not line.startswith("#"))
    for requirement in config["python"]["packages"]:
        name, version = requirement.lower().split("==")
        assert pins[name] == version, requirement
    with tempfile.TemporaryDirectory() as out:
        wheel = serving_wheel(Path(out))
        assert wheel.name == Path(config["python"]["wheels"][0]).name
        assert serving_wheel(Path(out) / "again").read_bytes() == wheel.read_bytes()  # reproducible


def test_readme_lists_every_serving_setting():
    from tiffin.serve.settings import VARIABLES

    readme = (ROOT / "README.md").read_text()
    for name, (default, meaning) in VARIABLES.items():
        assert f"| `{name}` | {default or '—'} | {meaning} |" in readme, name
