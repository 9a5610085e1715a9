"""One prediction path behind every door: the services, `tiffin predict` / `evaluate` and the Python
API answer a file through the predictors' `predict_file`, and `tiffin serve MODEL` serves a PyTorch
model as `model.serve()` does (an ONNX export in a temporary folder, removed when it stops)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.helpers import post_multipart, predict_json, service, tiffin, wait_until
from tiffin.errors import TiffinError
from tiffin.host import SpeechPredictor, VideoPredictor

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def predict_file_calls(monkeypatch) -> list[tuple[str, str]]:
    """(predictor class, file) of every predict_file call, whoever makes it."""
    calls: list[tuple[str, str]] = []
    for cls in (VideoPredictor, SpeechPredictor):
        real = cls.predict_file

        def spy(self, file, *args, _real=real, **kwargs):
            calls.append((type(self).__name__, str(file)))
            return _real(self, file, *args, **kwargs)

        monkeypatch.setattr(cls, "predict_file", spy)
    return calls


def test_the_services_the_cli_and_the_api_answer_a_file_through_predict_file(monkeypatch, artifacts, videos,
                                                                           recordings, predict_file_calls):
    import tiffin as api

    video = service(monkeypatch, "video", artifacts["video"], TIFFIN_CLIPS=2)
    served = video.classify(videos[0], top_k=3)
    assert predict_file_calls == [("VideoPredictor", str(videos[0]))]
    cli = predict_json(artifacts["video"], [videos[0]], "--top-k", "3", "--clips", "2")[0]
    from_python = api.load(artifacts["video"]).predict(str(videos[0]), top_k=3, clips=2)  # one str: one file
    assert predict_file_calls[1:] == [("VideoPredictor", str(videos[0]))] * 2
    # each door picks its keys from the one answer: the service's as before, no service keys in the CLI's
    assert list(served) == ["labels", "clips", "duration_s", "backbone"] and served["clips"] == 2
    assert list(cli) == ["file", "labels"] and from_python == [cli]
    assert served["labels"] == cli["labels"]

    speech = service(monkeypatch, "speech", artifacts["speech"])
    del predict_file_calls[:]
    served = speech.transcribe(recordings[0])
    cli = predict_json(artifacts["speech"], [recordings[0]])[0]
    assert predict_file_calls == [("SpeechPredictor", str(recordings[0]))] * 2
    assert list(served) == ["text", "duration_s", "backbone"] and list(cli) == ["file", "text", "duration_s"]
    assert (served["text"], served["duration_s"]) == (cli["text"], cli["duration_s"])


def test_a_lost_model_worker_is_still_a_503_around_the_model_call(monkeypatch, artifacts, videos, recordings):
    def lost(*_):
        raise ConnectionResetError("the model worker went away")

    for name, file, call in (("video", videos[0], "classify"), ("speech", recordings[0], "transcribe")):
        svc = service(monkeypatch, name, artifacts[name])
        monkeypatch.setattr(svc.model, "logits", lost)
        answer = getattr(svc, call)(file)
        assert answer.status_code == 503 and "send it again" in json.loads(answer.body)["error"], name


def test_the_api_takes_what_the_cli_takes(artifacts, videos, motion_dataset):
    import tiffin as api

    artifact = api.load(artifacts["video"])
    # a span of each file, as `tiffin predict --start/--end`
    cli = predict_json(artifacts["video"], videos[:2], "--start", "0.4", "--end", "1.6")
    assert artifact.predict(videos[:2], start=0.4, end=1.6) == cli and cli[0]["start"] == 0.4
    with pytest.raises(TiffinError, match="is not after"):
        artifact.predict(videos[:1], start=1.0, end=0.5)
    # the same opening path: a runtime for a PyTorch model is refused at both doors, each in its own words
    result = tiffin("predict", "tiffin/tiny-motion", videos[0], "--runtime", "openvino")
    assert result.exit_code == 2 and "--runtime openvino: runtimes run exported artifacts" in result.output
    assert "(tiffin export it first)" in result.output
    with pytest.raises(TiffinError, match="runtime='openvino': runtimes run exported artifacts"):
        api.load("tiffin/tiny-motion", runtime="openvino")
    # `tiffin evaluate` names the model it was given, with or without --runtime
    plain = json.loads(tiffin("evaluate", artifacts["video"], motion_dataset).stdout)
    on_runtime = json.loads(tiffin("evaluate", artifacts["video"], motion_dataset, "--runtime", "onnxruntime").stdout)
    assert plain == on_runtime and plain["model"] == str(artifacts["video"])
    assert {k: v for k, v in artifact.evaluate(motion_dataset).items() if k != "model"} == \
        {k: v for k, v in plain.items() if k != "model"}


def _serve(model: str, tmp: Path, log: Path) -> subprocess.Popen:
    """`tiffin serve MODEL --port 0` with TMPDIR `tmp` (short: BentoML keeps unix sockets there)."""
    env = {**os.environ, "TMPDIR": str(tmp), "BENTOML_HOME": str(tmp / "bentoml")}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "tiffin", "serve", model, "--port", "0"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _ours(tmp: Path) -> list[Path]:
    """What tiffin left in TMPDIR (BentoML's own folders aside)."""
    return sorted(p for p in tmp.iterdir() if p.name.startswith("tiffin-serve"))


def test_tiffin_serve_of_a_model_serves_its_onnx_export_and_removes_it_on_sigterm(videos, tmp_path):
    """`tiffin serve tiffin/tiny-motion` exports it as model.serve() does, answers as `tiffin predict`
    answers (within the export's tolerance), and SIGTERM to it (docker stop) stops the server it
    started and removes the export."""
    tmp = Path(tempfile.mkdtemp(prefix="t-", dir="/tmp"))
    log = tmp_path / "serve.log"
    process = _serve("tiffin/tiny-motion", tmp, log)
    try:
        assert wait_until(lambda: "serving at" in log.read_text() or process.poll() is not None, 300), log.read_text()
        assert process.poll() is None, log.read_text()[-3000:]
        url = re.search(r"serving at (http://\S+)", log.read_text()).group(1)
        export = re.search(r"exported to ONNX fp32 in (\S+)", log.read_text()).group(1)
        assert (Path(export) / "artifact" / "tiffin.json").is_file() and Path(export).is_relative_to(tmp)
        servers = psutil.Process(process.pid).children()
        assert servers
        status, body = post_multipart(url + "/classify", "video", videos[0].read_bytes(), videos[0].name)
        expected = predict_json("tiffin/tiny-motion", [videos[0]])[0]["labels"]
        assert status == 200 and body["backbone"] == "tiffin/tiny-motion", body
        assert [x["label"] for x in body["labels"]][:1] == [x["label"] for x in expected][:1]
        scores = {x["label"]: x["score"] for x in expected}
        assert sorted(scores) == sorted(x["label"] for x in body["labels"])
        np.testing.assert_allclose([x["score"] for x in body["labels"]], [scores[x["label"]] for x in body["labels"]],
                                   atol=1e-4)
        assert "Service tiffin-video initialized" in log.read_text()  # the server's log is followed here
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=90) == 0, log.read_text()[-3000:]
        assert not [p for p in servers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not _ours(tmp), _ours(tmp)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def test_ctrl_c_while_the_server_starts_stops_it_and_removes_the_export(tmp_path):
    tmp = Path(tempfile.mkdtemp(prefix="t-", dir="/tmp"))
    log = tmp_path / "serve.log"
    process = _serve("tiffin/tiny-motion", tmp, log)
    try:
        # the export is done and `bentoml serve` runs, not yet ready
        assert wait_until(lambda: psutil.Process(process.pid).children() or process.poll() is not None, 300)
        servers = psutil.Process(process.pid).children()
        assert servers and "serving at" not in log.read_text(), log.read_text()[-3000:]
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=90) == 0, log.read_text()[-3000:]
        assert wait_until(lambda: not [p for p in servers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
                          10)
        assert not _ours(tmp), _ours(tmp)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
