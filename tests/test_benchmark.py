"""`tiffin benchmark`: every format x precision exported, gated and timed against PyTorch eager."""

from __future__ import annotations

import json

from tests.helpers import tiffin
from tiffin.export.specs import TOLERANCES

REQUIRED = {"format", "precision", "status", "size_mb", "latency_ms", "speedup", "batch", "p90_ms", "items_per_s",
            "gflops_per_s", "peak_fraction"}


def test_benchmark_json_plot_and_data(checkpoints, motion_dataset, tmp_path, monkeypatch):
    from tiffin.export import specs

    # the int8 gate told to pass, so that its artifact runs on every runtime (the refusal is the next test's)
    lenient = {"atol": 1e3, "rtol": 1e3, "min_top1_agreement": 0.0, "max_cer": 1.0}
    monkeypatch.setitem(specs.TOLERANCES, "int8", lenient)
    result = tiffin("benchmark", checkpoints["video"], "--formats", "onnx,torchscript", "--precisions", "fp32,bf16,int8",
                    "--batch", "1,2", "--runs", "2", "--data", motion_dataset, "--json", "--plot", tmp_path / "speed.png")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    from tiffin.cpu import precision_warning

    # the bf16 matmul peak is measured only where bf16 has instructions (emulated, it took 6 minutes)
    assert ("bf16" in rows[0]["machine_peak_gflops"]) == (precision_warning("bf16") is None)
    variants = [(r["format"], r["runtime"], r["precision"]) for r in rows if r["batch"] == 1]
    # every exported artifact runs on every runtime of its format (ONNX: ONNX Runtime and OpenVINO)
    int8 = [v for v in variants if v[2] == "int8"]
    onnx_runtimes = ("onnxruntime", "openvino", "openvino-bf16", "tensorrt")
    assert int8 == [("onnx", r, "int8") for r in onnx_runtimes]
    assert [v for v in variants if v[2] != "int8"] == [
        ("pytorch", "pytorch", "fp32"), ("pytorch", "pytorch", "bf16"),
        *[("onnx", r, "fp32") for r in onnx_runtimes], ("torchscript", "torchscript", "fp32"),
        ("torchscript", "torchscript", "bf16")]
    openvino = next(r for r in rows if (r["runtime"], r["precision"], r["batch"]) == ("openvino", "fp32", 1))
    assert openvino["status"] == "ok" and openvino["parity"]["runtime"] == "openvino" and openvino["latency_ms"] > 0
    # OpenVINO's bf16 hint: run and gated by bf16's tolerances where the CPU has bf16, a skipped row saying why where not
    # (this CPU's side; tests/test_runtimes.py tells tiffin each side and checks both rows on any machine)
    hinted = next(r for r in rows if (r["runtime"], r["precision"], r["batch"]) == ("openvino-bf16", "fp32", 1))
    from tiffin.cpu import has_bf16

    if has_bf16():
        assert hinted["status"] == "ok" and hinted["parity"]["tolerance"] == TOLERANCES["bf16"], hinted
    else:
        assert hinted["status"] == "skipped" and "no bf16 instructions" in hinted["note"], hinted
    for row in rows:
        assert {"format", "runtime", "precision", "status", "note", "batch"} <= set(row), row
        if row["status"] == "ok":
            assert REQUIRED <= set(row), row
            assert row["latency_ms"] > 0 and row["p90_ms"] >= row["latency_ms"] and 0 < row["peak_fraction"] < 5
            assert "accuracy" in row["metric"]  # scored on --data
    baseline = [r for r in rows if (r["format"], r["precision"]) == ("pytorch", "fp32")]
    assert [r["speedup"] for r in baseline] == [1.0, 1.0]
    onnx = next(r for r in rows if (r["runtime"], r["precision"], r["batch"]) == ("onnxruntime", "fp32", 2))
    assert onnx["status"] == "ok" and onnx["size_mb"] > 0 and onnx["parity"]["top1_agreement"] == 1.0
    # static int8, calibrated on --data (without it the row is skipped), passed by the gate on the
    # tolerances it was given, then timed and scored on every runtime that can compile it
    for runtime in ("onnxruntime", "openvino"):
        int8 = next(r for r in rows if (r["runtime"], r["precision"], r["batch"]) == (runtime, "int8", 1))
        assert int8["status"] == "ok" and int8["parity"]["tolerance"] == lenient, int8
        assert int8["latency_ms"] > 0 and "accuracy" in int8["metric"] and int8["size_mb"] > 0, int8
    assert (tmp_path / "speed.png").read_bytes()[:4] == b"\x89PNG"


def test_a_refused_export_is_a_row_not_the_end(checkpoints, monkeypatch):
    from tiffin.export import specs
    from tiffin.export.benchmark import BenchOptions, benchmark

    monkeypatch.setitem(specs.TOLERANCES, "fp16", {**specs.TOLERANCES["fp16"], "atol": 0.0, "rtol": 0.0})  # none passes
    rows = benchmark(BenchOptions(checkpoints["speech"], [("pytorch", "fp32"), ("onnx", "fp16"), ("onnx", "fp32")],
                                  [1], runs=1, warmup=0))
    status = {(r["format"], r["runtime"] or "-", r["precision"]): (r["status"], r["note"]) for r in rows}
    assert status[("onnx", "-", "fp16")][0] == "parity failed" and "atol" in status[("onnx", "-", "fp16")][1]
    assert status[("onnx", "onnxruntime", "fp32")][0] == "ok" and status[("pytorch", "pytorch", "fp32")][0] == "ok"
    assert next(r for r in rows if r["precision"] == "fp16").get("latency_ms") is None


def test_an_int8_export_the_gate_refuses_is_one_untimed_row(checkpoints, motion_dataset, monkeypatch):
    from tiffin.export import specs
    from tiffin.export.benchmark import BenchOptions, benchmark

    monkeypatch.setitem(specs.TOLERANCES, "int8", {**specs.TOLERANCES["int8"], "atol": 0.0, "rtol": 0.0})  # none passes
    rows = benchmark(BenchOptions(checkpoints["video"], [("onnx", "int8")], [1, 2], data=motion_dataset, runs=1,
                                  warmup=0))
    # calibrated on --data, then refused: one row per batch size, on no runtime (no artifact is left
    # to run), saying which bound it broke, neither timed nor scored
    assert [(r["runtime"], r["batch"], r["status"]) for r in rows] == [(None, 1, "parity failed"),
                                                                        (None, 2, "parity failed")], rows
    for row in rows:
        assert "exceeds atol 0 + rtol 0" in row["note"], row
        assert row.get("latency_ms") is None and row["size_mb"] is None and "metric" not in row, row


def test_bad_benchmark_options_are_one_line_errors(checkpoints):
    for args, words in [(["--formats", "tflite"], "--formats tflite"), (["--batch", "0"], "--batch 0"),
                        (["--precisions", "fp8"], "--precisions fp8")]:
        result = tiffin("benchmark", checkpoints["video"], *args)
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output


def test_an_artifact_is_timed_against_the_model_it_came_from(artifacts, tmp_path):
    import shutil

    from tiffin.host import open_artifact
    from tiffin.runtimes import OpenVinoSession

    recorded = tmp_path / "recorded"
    shutil.copytree(artifacts["speech"], recorded)
    result = tiffin("benchmark", recorded, "--batch", "1", "--runs", "3", "--json", "--record")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    from tiffin.cpu import has_bf16

    from tiffin.onnx_session import tensorrt_missing

    assert [(r["format"], r["runtime"], r["status"]) for r in rows] == [
        ("pytorch", "pytorch", "ok"), ("onnx", "onnxruntime", "ok"), ("onnx", "openvino", "ok"),
        ("onnx", "openvino-bf16", "ok" if has_bf16() else "skipped"),
        ("onnx", "tensorrt", "ok" if tensorrt_missing() is None else "skipped")]
    timed = [r for r in rows[1:] if r["status"] == "ok"]
    for row in timed:  # each runtime is gated on its own outputs
        assert row["speedup"] > 0 and row["parity"]["runtime"] == row["runtime"]
        assert row["parity"]["transcript_cer"] <= (0.0 if row["runtime"] != "openvino-bf16" else TOLERANCES["bf16"]["max_cer"])
    fastest = min(timed, key=lambda r: r["latency_ms"])["runtime"]
    assert f"recorded runtime {fastest} in {recorded / 'tiffin.json'}" in result.output
    assert json.loads((recorded / "tiffin.json").read_text())["runtime"] == fastest
    predictor, _ = open_artifact(recorded)  # the recorded runtime is the one it opens on, unless told otherwise
    assert isinstance(predictor.session, OpenVinoSession) == fastest.startswith("openvino")
    assert not isinstance(open_artifact(recorded, runtime="onnxruntime")[0].session, OpenVinoSession)
    refused = tiffin("benchmark", "tiffin/tiny-en", "--record")
    assert refused.exit_code == 2 and "not an artifact folder" in refused.output
    # an artifact whose source is gone cannot have a baseline: a one-line error
    moved = tmp_path / "copy"
    shutil.copytree(artifacts["speech"], moved)
    meta = json.loads((moved / "tiffin.json").read_text())
    meta["source"]["relative"] = "../gone.ckpt"
    (moved / "tiffin.json").write_text(json.dumps(meta))
    result = tiffin("benchmark", moved)
    assert result.exit_code == 2 and "gone.ckpt is gone" in result.output and "the checkpoint" in result.output
