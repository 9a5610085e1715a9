"""The runtimes table: an ONNX artifact runs on ONNX Runtime or OpenVINO, chosen per call
(`--runtime`), recorded in tiffin.json, or set for the services (TIFFIN_RUNTIME); each behind
the same parity gate; a runtime that does not run the format is a one-line error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.helpers import HAS_BF16, tell_cpu_bf16, tiffin


def test_openvino_runs_the_onnx_artifacts_within_parity(artifacts, videos, recordings):
    for task, files in (("video", videos[:3]), ("speech", recordings[:3])):
        check = tiffin("check", artifacts[task], "--runtime", "openvino")
        assert check.exit_code == 0, check.output
        assert json.loads(check.stdout)["runtime"] == "openvino"
        answers = {}
        for runtime in ("onnxruntime", "openvino"):
            result = tiffin("predict", artifacts[task], *files, "--runtime", runtime, "--json", "--top-k", "3")
            assert result.exit_code == 0, result.output
            answers[runtime] = json.loads(result.stdout)
        import tiffin as api

        assert api.load(artifacts[task], runtime="openvino").predict(files, top_k=3) == answers["openvino"]
        for ort, ov in zip(answers["onnxruntime"], answers["openvino"]):
            if task == "speech":
                assert ov["text"] == ort["text"]
            else:
                assert [x["label"] for x in ov["labels"]][:1] == [x["label"] for x in ort["labels"]][:1]
                assert np.allclose([x["score"] for x in ov["labels"]], [x["score"] for x in ort["labels"]], atol=1e-4)


def test_a_runtime_that_cannot_run_it_is_a_one_line_error(artifacts, checkpoints):
    for args, words in [
        ((artifacts["video"], "--runtime", "torchscript"), "runs torchscript artifacts, this one is onnx (use onnxruntime, openvino, openvino-bf16, tensorrt)"),
        ((artifacts["video"], "--runtime", "tensorflow"), "choose one of onnxruntime, openvino, openvino-bf16, tensorrt"),
        ((checkpoints["video"], "--runtime", "openvino"), "runtimes run exported artifacts"),
    ]:
        result = tiffin("predict", args[0], __file__, *args[1:])
        assert result.exit_code == 2 and words in result.output and "\n" not in result.output.strip(), result.output


def test_a_recorded_runtime_is_checked_at_load_and_used_by_the_services(artifacts, videos, tmp_path, monkeypatch):
    from tiffin.errors import TiffinError
    from tiffin.host import open_artifact
    from tiffin.runtimes import OpenVinoSession
    from tiffin.serve.settings import read_settings

    art = tmp_path / "video"
    shutil.copytree(artifacts["video"], art)
    meta = json.loads((art / "tiffin.json").read_text())
    (art / "tiffin.json").write_text(json.dumps({**meta, "runtime": "torchscript"}))
    with pytest.raises(TiffinError, match="runtime 'torchscript' does not run onnx artifacts"):
        open_artifact(art)
    (art / "tiffin.json").write_text(json.dumps({**meta, "runtime": "openvino"}))
    predictor, _ = open_artifact(art)
    assert isinstance(predictor.session, OpenVinoSession)
    # the bento of an artifact recorded to run on OpenVINO installs OpenVINO, and not ONNX Runtime
    from tiffin.serve.commands import BENTOFILE, bento_options

    (tmp_path / "context").mkdir()
    packages = bento_options(BENTOFILE, {**meta, "runtime": "openvino"}, "m:1", "n", False,
                             tmp_path / "context")["python"]["packages"]
    assert any(p.startswith("openvino==") for p in packages) and not any(p.startswith("onnxruntime") for p in packages)
    # the services take TIFFIN_RUNTIME (torch-free runtimes only), and answer as predict does on it
    with pytest.raises(TiffinError, match="TIFFIN_RUNTIME=.torchscript.: the services run on onnxruntime, openvino, openvino-bf16, tensorrt"):
        read_settings({"TIFFIN_RUNTIME": "torchscript"})
    # (the services' own process is where OpenVINO runs: a full test run segfaulted in the test after
    # one that built an OpenVINO service inside the pytest process, so it is only started as a server)
    expected = json.loads(tiffin("predict", artifacts["video"], *videos[:2], "--runtime", "openvino", "--json",
                                 "--top-k", "2").stdout)
    # and a real `bentoml serve` of the artifact recorded to run on OpenVINO answers over HTTP the same
    import tiffin as api
    from tests.helpers import post_multipart

    with api.load(art).serve(port=0) as server:
        for file, answer in zip(videos[:2], expected):
            status, body = post_multipart(server.url + "/classify", "video", file.read_bytes(), file.name, {"top_k": "2"})
            assert status == 200 and body["labels"] == answer["labels"]



@pytest.mark.parametrize("bf16", [True, False], ids=["cpu-with-bf16", "cpu-without-bf16"])
def test_an_export_warns_first_when_the_cpu_lacks_its_precision(checkpoints, tmp_path, monkeypatch, bf16):
    tell_cpu_bf16(monkeypatch, bf16)  # both sides on any machine; the export itself runs as this CPU can
    result = tiffin("export", checkpoints["video"], "--format", "torchscript", "--precision", "bf16",
                    "--out", tmp_path / "bf16")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if line.startswith("warning:")]
    if bf16:
        assert not warned, result.output
        return
    # one line, naming what is missing and the faster choice, said before the export's own lines
    assert len(warned) == 1 and "this CPU has no bf16 instructions" in warned[0] and "fp32 is the faster choice" \
        in warned[0], result.output
    assert result.output.index("warning:") < result.output.index("parity ok")
    fp32 = tiffin("export", checkpoints["video"], "--format", "onnx", "--precision", "fp32", "--out", tmp_path / "fp32")
    assert fp32.exit_code == 0 and "warning" not in fp32.output


class RecordingCore:
    """openvino.Core, recording the configuration each model is compiled with (what tiffin asked
    OpenVINO for, whatever the hardware then does with it)."""

    def __init__(self, monkeypatch):
        import openvino as ov

        self.configs: list[dict] = []
        configs, real = self.configs, ov.Core

        class Core(real):
            def compile_model(self, model, device=None, config=None):
                configs.append(dict(config or {}))
                if not HAS_BF16 and (config or {}).get("INFERENCE_PRECISION_HINT") == "bf16":
                    # a CPU without bf16 told it has some: what OpenVINO does with a hint this
                    # hardware cannot take is not tiffin's to test; compile at f32
                    config = {**config, "INFERENCE_PRECISION_HINT": "f32"}
                return super().compile_model(model, device, config)

        monkeypatch.setattr(ov, "Core", Core)

    def hints(self) -> set[str]:
        return {c.get("INFERENCE_PRECISION_HINT") for c in self.configs}


@pytest.mark.skipif(not HAS_BF16, reason="computing in bf16 needs a CPU with AVX-512 bf16 or AMX (this one has neither)")
def test_openvino_bf16_computes_in_bf16_on_a_cpu_with_bf16(artifacts, videos):
    """The hint is taken by the hardware (not silently computed in fp32), within bf16's bounds."""
    from tiffin.export.specs import TOLERANCES

    for task in ("video", "speech"):
        bf16 = tiffin("check", artifacts[task], "--runtime", "openvino-bf16")
        assert bf16.exit_code == 0, bf16.output
        report = json.loads(bf16.stdout)
        fp32 = json.loads(tiffin("check", artifacts[task], "--runtime", "openvino").stdout)
        assert report["runtime"] == "openvino-bf16"
        # computed in bf16, not silently in fp32: further from PyTorch than the fp32 run, within bf16's bound
        assert 100 * fp32["max_abs_diff"] < report["max_abs_diff"] <= TOLERANCES["bf16"]["atol"], report
    top1 = [json.loads(tiffin("predict", artifacts["video"], *videos[:4], "--runtime", r, "--json", "--top-k", "1").stdout)
            for r in ("openvino", "openvino-bf16")]
    assert sum(a["labels"][0]["label"] == b["labels"][0]["label"] for a, b in zip(*top1)) >= 3


def _recorded(artifacts, tmp_path, runtime: str):
    art = tmp_path / "video"
    shutil.copytree(artifacts["video"], art)
    meta = json.loads((art / "tiffin.json").read_text())
    (art / "tiffin.json").write_text(json.dumps({**meta, "runtime": runtime}))
    return art


def test_openvino_bf16_on_a_cpu_with_bf16_takes_the_hint(artifacts, videos, tmp_path, monkeypatch, caplog):
    """Told the CPU has bf16 (whatever this one has): the runtime is offered and runs, OpenVINO is
    asked for bf16, the check is judged by bf16's tolerances, a recorded choice is kept, and the
    benchmark times the row."""
    from tiffin.export.specs import TOLERANCES
    from tiffin.host import open_artifact
    from tiffin.runtimes import RUNTIMES, OpenVinoSession

    tell_cpu_bf16(monkeypatch, True)
    core = RecordingCore(monkeypatch)
    assert RUNTIMES["openvino-bf16"].needs() is None
    for task in ("video", "speech"):
        checked = tiffin("check", artifacts[task], "--runtime", "openvino-bf16")
        assert checked.exit_code == 0, checked.output
        report = json.loads(checked.stdout)
        assert report["runtime"] == "openvino-bf16" and report["tolerance"] == TOLERANCES["bf16"], report
    assert core.hints() == {"bf16"}, core.configs
    art = _recorded(artifacts, tmp_path, "openvino-bf16")
    core.configs.clear()
    with caplog.at_level("WARNING", logger="tiffin"):
        predictor, _ = open_artifact(art)  # the recorded choice, no fallback
        answered = tiffin("predict", art, videos[0], "--json")
    assert isinstance(predictor.session, OpenVinoSession) and core.hints() == {"bf16"}, core.configs
    assert answered.exit_code == 0 and "cannot run here" not in caplog.text, (answered.output, caplog.text)
    rows = json.loads(tiffin("benchmark", artifacts["video"], "--batch", "1", "--runs", "1", "--json").stdout)
    hinted = next(r for r in rows if r["runtime"] == "openvino-bf16")
    assert hinted["status"] == "ok" and hinted["parity"]["tolerance"] == TOLERANCES["bf16"], hinted
    assert hinted["latency_ms"] > 0


def test_openvino_bf16_on_a_cpu_without_bf16_stands_aside(artifacts, videos, tmp_path, monkeypatch, caplog):
    """Told the CPU has no bf16 (whatever this one has): given explicitly, a one-line refusal;
    recorded (on a machine with bf16), the artifact runs on openvino fp32 with a warning; the
    benchmark row is skipped, saying why."""
    import openvino as ov

    from tiffin.errors import TiffinError
    from tiffin.host import open_artifact
    from tiffin.runtimes import RUNTIMES, OpenVinoSession

    tell_cpu_bf16(monkeypatch, False)
    core = RecordingCore(monkeypatch)
    reason = RUNTIMES["openvino-bf16"].needs()
    assert reason and "no bf16 instructions" in reason
    for command in ("predict", "check"):
        args = (videos[0],) if command == "predict" else ()
        result = tiffin(command, artifacts["video"], *args, "--runtime", "openvino-bf16")
        assert result.exit_code == 2 and "no bf16 instructions" in result.output, result.output
        assert "\n" not in result.output.strip() and "use --runtime openvino" in result.output, result.output
    assert "bf16" not in core.hints()  # refused before anything was compiled for it
    art = _recorded(artifacts, tmp_path, "openvino-bf16")
    with pytest.raises(TiffinError, match="runtime openvino-bf16: this CPU has no bf16 instructions"):
        open_artifact(art, runtime="openvino-bf16")
    predictor, _ = open_artifact(art)
    assert isinstance(predictor.session, OpenVinoSession)
    # compiled at fp32 (asked so, and OpenVINO's own report), not at the recorded bf16
    assert core.hints() == {"f32"}, core.configs
    assert predictor.session.model.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    expected = tiffin("predict", artifacts["video"], videos[0], "--runtime", "openvino", "--json")
    with caplog.at_level("WARNING", logger="tiffin"):
        result = tiffin("predict", art, videos[0], "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == json.loads(expected.stdout), result.output
    assert "recorded runtime openvino-bf16 cannot run here" in caplog.text and "running on openvino" in caplog.text
    rows = json.loads(tiffin("benchmark", artifacts["video"], "--batch", "1", "--runs", "1", "--json").stdout)
    assert [(r["status"], r["note"]) for r in rows if r["runtime"] == "openvino-bf16"] == [("skipped", reason)]
    assert "bf16" not in rows[0]["machine_peak_gflops"]  # nor is an emulated bf16 peak measured


# OpenVINO absent from the process (as where only tiffin[cpu] is installed): find_spec finds
# nothing, an import raises
NO_OPENVINO = """
import sys
sys.modules["openvino"] = None
sys.argv = ["tiffin", *sys.argv[1:]]
from tiffin.cli import main
main()
"""


def test_without_openvino_a_recorded_openvino_choice_runs_on_onnx_runtime(artifacts, videos, tmp_path):
    """OpenVINO is an extra: where it is missing, an artifact recorded to run on it (by `tiffin
    benchmark --record` elsewhere) answers on ONNX Runtime with a warning, asking for it is a
    one-line error naming the extra, and the benchmark lists its rows as not installed."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", NO_OPENVINO, *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    expected = json.loads(tiffin("predict", artifacts["video"], *videos[:2], "--runtime", "onnxruntime", "--json",
                                 "--top-k", "2").stdout)
    meta = json.loads((artifacts["video"] / "tiffin.json").read_text())
    for recorded in ("openvino", "openvino-bf16"):
        art = tmp_path / recorded
        shutil.copytree(artifacts["video"], art)
        (art / "tiffin.json").write_text(json.dumps({**meta, "runtime": recorded}))
        got = run("predict", art, *videos[:2], "--json", "--top-k", "2")
        assert got.returncode == 0, got.stderr[-2000:]
        assert json.loads(got.stdout) == expected
        assert f"recorded runtime {recorded} cannot run here (OpenVINO is not installed" in got.stderr
        assert "running on onnxruntime" in got.stderr
    asked = run("predict", artifacts["video"], videos[0], "--runtime", "openvino")
    assert asked.returncode == 2 and "pip install 'tiffin[openvino]'" in asked.stderr, asked.stderr[-2000:]
    assert len(asked.stderr.strip().splitlines()) == 1
    rows = json.loads(run("benchmark", artifacts["video"], "--batch", "1", "--runs", "1", "--json").stdout)
    status = {r["runtime"]: (r["status"], r["note"]) for r in rows}
    assert status["onnxruntime"][0] == "ok"
    for name in ("openvino", "openvino-bf16"):
        assert status[name] == ("skipped", "not installed: pip install 'tiffin[openvino]'"), status


def test_tensorrt_is_a_gpu_row_that_says_why_it_cannot_run_here(artifacts, videos, tmp_path, caplog):
    """The TensorRT row (ONNX Runtime's provider, an NVIDIA GPU): on a machine without one, asking
    for it is a one-line error saying why, the benchmark skips it with that reason, an artifact
    recorded with it elsewhere answers on ONNX Runtime with a warning, and a bento refuses it."""
    from tiffin.onnx_session import tensorrt_missing
    from tiffin.runtimes import RUNTIMES

    reason = tensorrt_missing()
    if reason is None:  # an NVIDIA GPU with TensorRT: the row runs, judged by fp16's tolerances
        checked = tiffin("check", artifacts["video"], "--runtime", "tensorrt")
        assert checked.exit_code == 0 and json.loads(checked.stdout)["runtime"] == "tensorrt", checked.output
        return
    assert RUNTIMES["tensorrt"].needs() == reason and RUNTIMES["tensorrt"].device == "cuda"
    asked = tiffin("predict", artifacts["video"], videos[0], "--runtime", "tensorrt")
    assert asked.exit_code == 2 and f"runtime tensorrt: {reason}" in asked.output, asked.output
    assert "\n" not in asked.output.strip()
    art = tmp_path / "video"
    shutil.copytree(artifacts["video"], art)
    meta = json.loads((art / "tiffin.json").read_text())
    (art / "tiffin.json").write_text(json.dumps({**meta, "runtime": "tensorrt"}))
    expected = tiffin("predict", artifacts["video"], videos[0], "--runtime", "onnxruntime", "--json")
    with caplog.at_level("WARNING", logger="tiffin"):
        got = tiffin("predict", art, videos[0], "--json")
    assert got.exit_code == 0 and json.loads(got.stdout) == json.loads(expected.stdout), got.output
    assert "recorded runtime tensorrt cannot run here" in caplog.text and "running on onnxruntime" in caplog.text
    rows = json.loads(tiffin("benchmark", artifacts["video"], "--batch", "1", "--runs", "1", "--json").stdout)
    assert [(r["status"], r["note"]) for r in rows if r["runtime"] == "tensorrt"] == [("skipped", reason)]
    table = tiffin("benchmark", artifacts["video"], "--batch", "1", "--runs", "1")
    assert f"onnx fp32 (tensorrt): skipped: {reason}" in table.stdout, table.stdout  # "[gpu]" printed as written
    from tiffin.errors import TiffinError
    from tiffin.serve.commands import BENTOFILE, bento_options

    (tmp_path / "context").mkdir()
    with pytest.raises(TiffinError, match="records runtime tensorrt, which bentos do not bundle yet"):
        bento_options(BENTOFILE, {**meta, "runtime": "tensorrt"}, "m:1", "n", False, tmp_path / "context")
