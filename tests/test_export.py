"""export/: every format x precision in the table, for both tasks, gated by parity."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from tiffin.artifact_json import read_artifact, sha256
from tiffin.export.exporting import ExportOptions, export_model
from tiffin.export.formats import FORMATS
from tiffin.export.onnx_format import read_onnx_metadata
from tiffin.export.parity import ParityError
from tiffin.export.specs import TOLERANCES
from tests.helpers import tell_cpu_bf16, tiffin
from tiffin.ctc import error_rates

CASES = [(task, fmt, precision) for task in ("video", "speech") for fmt in FORMATS for precision in FORMATS[fmt].precisions]
REQUIRED = {"schema_version", "task", "backbone", "preprocessing", "parity", "precision", "format", "sha256",
            "inputs", "outputs", "dynamic_axes", "versions"}


def _embedded(path: Path) -> dict:
    if path.suffix == ".onnx":
        return read_onnx_metadata(path)
    with zipfile.ZipFile(path) as z:  # TorchScript and lite-interpreter files are zip archives
        name = next(n for n in z.namelist() if n.endswith("extra/tiffin.json"))
        return json.loads(z.read(name))


@pytest.mark.parametrize("task,fmt,precision", CASES, ids=[f"{t}-{f}-{p}" for t, f, p in CASES])
def test_export_check_and_predict(checkpoints, motion_dataset, tmp_path, task, fmt, precision):
    out = tmp_path / "artifact"
    calibration = ["--calibration-data", motion_dataset] if (task, precision) == ("video", "int8") else []
    result = tiffin("export", checkpoints[task], "--format", fmt, "--precision", precision, "--out", out, "--json",
                    *calibration)
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert REQUIRED <= set(meta) and meta == read_artifact(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([FORMATS[fmt].file, "tiffin.json", "tiffin.sig"])
    embedded = _embedded(out / FORMATS[fmt].file)
    assert embedded == {k: v for k, v in meta.items() if k not in ("parity", "sha256")}
    checked_shapes = [s["inputs"][0][0] for s in meta["parity"]["samples"]]
    assert 2 not in checked_shapes  # checked on batch sizes other than the tracing sample's
    if task == "video":
        assert meta["labels"] == ["move_down", "move_left", "move_right", "move_up"]
        files = sorted(motion_dataset.rglob("*.mp4"))[:2]
        args = ["--top-k", "2", "--json"]
    else:
        assert meta["vocab"][4] == "|" and meta["preprocessing"]["sample_rate"] == 16000
        assert meta["dynamic_axes"]["waveform"] == {"0": "batch", "1": "samples"}
        files = sorted(checkpoints["clips"].glob("*.*"))[:2]
        args = ["--json"]
    from_artifact = json.loads(tiffin("predict", out, *files, *args).stdout)
    from_checkpoint = json.loads(tiffin("predict", checkpoints[task], *files, *args).stdout)
    tolerance = TOLERANCES[precision]
    if task == "video":
        tops = [(a["labels"][0]["label"], b["labels"][0]["label"]) for a, b in zip(from_artifact, from_checkpoint)]
        assert sum(a == b for a, b in tops) / len(tops) >= tolerance["min_top1_agreement"], tops
    else:
        texts = [(a["text"], b["text"]) for a, b in zip(from_artifact, from_checkpoint)]
        assert error_rates([b for _, b in texts], [a for a, _ in texts])[1] <= tolerance["max_cer"], texts
    check = tiffin("check", out)
    assert check.exit_code == 0, check.output


def test_an_export_that_does_not_match_pytorch_is_refused_and_leaves_nothing(checkpoints, tmp_path, monkeypatch):
    from tiffin.export import formats
    from tiffin.export.onnx_format import export_onnx

    def broken_export(net, spec, path, precision, opset, metadata, **kwargs):
        with torch.no_grad():  # an exporter bug: one weight changes on the way out
            wrong = __import__("copy").deepcopy(net)
            wrong.head().bias.add_(1.0)
        export_onnx(wrong, spec, path, precision, opset, metadata)

    monkeypatch.setitem(formats.FORMATS, "onnx", formats.Format("onnx", "model.onnx", ("fp32",), broken_export,
                                                                 uses_opset=True))
    with pytest.raises(ParityError, match="exceeds atol"):
        export_model(ExportOptions(checkpoints["video"], out=tmp_path / "a"))
    assert list(tmp_path.iterdir()) == []


def test_int8_is_quantised_for_this_cpu_and_a_refusal_says_what_to_try(checkpoints, motion_dataset, tmp_path,
                                                                        monkeypatch):
    import onnx

    from tiffin import cpu
    from tiffin.export import specs

    def weight_range(path: Path) -> int:
        """The widest int8 weight of a quantised graph (7-bit weights stay within [-64, 63])."""
        from onnx import numpy_helper

        model = onnx.load(str(path))
        return max(int(abs(numpy_helper.to_array(t).astype(int)).max()) for t in model.graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and t.dims)

    ranges = {}
    for vnni, flags in ((True, {"avx2", "avx512_vnni"}), (False, {"avx2", "fma"})):  # the two kinds of x86 CPU
        monkeypatch.setattr(cpu, "cpu_flags", lambda flags=flags: frozenset(flags))
        monkeypatch.setattr("platform.machine", lambda: "x86_64")
        out = tmp_path / f"vnni-{vnni}"
        result = tiffin("export", checkpoints["video"], "--precision", "int8", "--calibration-data", motion_dataset,
                        "--out", out, "--json")
        assert result.exit_code == 0, result.output
        quantization = json.loads(result.stdout)["quantization"]
        assert quantization["reduce_range"] is (not vnni) and quantization["method"] == "static QDQ"
        assert ("no VNNI" in quantization["why"]) is (not vnni)
        ranges[vnni] = weight_range(out / "model.onnx")
    assert ranges[False] <= 64 < ranges[True], ranges  # reduce_range really narrows the weights
    # a refused int8 export names how it was quantised here and what to try
    monkeypatch.setitem(specs.TOLERANCES, "int8", {**specs.TOLERANCES["int8"], "atol": 0.0, "rtol": 0.0})
    refused = tiffin("export", checkpoints["video"], "--precision", "int8", "--calibration-data", motion_dataset,
                     "--out", tmp_path / "refused")
    assert refused.exit_code == 2 and "\n" not in refused.output.strip(), refused.output
    for words in ("exceeds atol", "nothing was written", "no VNNI", "--calibration-data", "--precision fp16 or fp32"):
        assert words in refused.output, (words, refused.output)
    assert not (tmp_path / "refused").exists()


def test_check_refuses_an_artifact_whose_model_changed(checkpoints, tmp_path):
    out = tmp_path / "a"
    assert tiffin("export", checkpoints["video"], "--out", out).exit_code == 0
    # the PyTorch model moves on (perturbed weights): the artifact no longer matches it
    ckpt = torch.load(checkpoints["video"], map_location="cpu", weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith("proj.bias"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1.0
    moved = tmp_path / "moved.ckpt"
    torch.save(ckpt, moved)
    result = tiffin("check", out, "--source", moved)
    assert result.exit_code == 2 and "exceeds atol" in result.output
    (out / "model.onnx").write_bytes((out / "model.onnx").read_bytes() + b"\0")
    tampered = tiffin("predict", out, "x.mp4")
    assert tampered.exit_code == 2 and "sha256" in tampered.output


def test_existing_artifacts_need_force_and_bad_options_are_one_line_errors(checkpoints, tmp_path):
    out = tmp_path / "a"
    assert tiffin("export", checkpoints["speech"], "--out", out).exit_code == 0
    first = (out / "tiffin.json").read_text()
    again = tiffin("export", checkpoints["speech"], "--out", out)
    assert again.exit_code == 2 and "--force" in again.output and (out / "tiffin.json").read_text() == first
    forced = tiffin("export", checkpoints["speech"], "--out", out, "--format", "torchscript", "--force")
    assert forced.exit_code == 0 and sorted(p.name for p in out.iterdir()) == ["model.pt", "tiffin.json", "tiffin.sig"]
    for args, needle in [(["--format", "mobile", "--precision", "fp16"], "--precision fp16"),
                         (["--format", "torchscript", "--precision", "int8"], "--precision int8"),
                         (["--format", "torchscript", "--opset", "17"], "--opset 17")]:
        result = tiffin("export", checkpoints["speech"], "--out", tmp_path / "b", *args)
        assert result.exit_code == 2 and needle in result.output, result.output
    no_calibration = tiffin("export", checkpoints["video"], "--precision", "int8", "--out", tmp_path / "b")
    assert no_calibration.exit_code == 2 and "--calibration-data" in no_calibration.output
    (tmp_path / "bad.ckpt").write_bytes(b"nope")
    bad = tiffin("export", tmp_path / "bad.ckpt", "--out", tmp_path / "c")
    assert bad.exit_code == 2 and "not a readable checkpoint" in bad.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_default_output_sits_in_the_run_folder(checkpoints, tmp_path):
    """Without --out, a checkpoint's RUN/checkpoints/X.ckpt exports to RUN/export/FORMAT-PRECISION.
    The checkpoint is copied into a run folder of the test's own: the session's run, which other
    tests read, is left as it was."""
    import shutil

    shared = checkpoints["video"].parent.parent
    before = sorted(str(p.relative_to(shared)) for p in shared.rglob("*"))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    model = shutil.copy2(checkpoints["video"], run / "checkpoints" / "best.ckpt")
    result = tiffin("export", model, "--format", "torchscript")
    assert result.exit_code == 0, result.output
    out = run / "export" / "torchscript-fp32"
    assert f"{out}: torchscript fp32, parity ok" in result.output, result.output  # and says where
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "tiffin.json", "tiffin.sig"]
    meta = json.loads((out / "tiffin.json").read_text())
    assert (meta["format"], meta["precision"]) == ("torchscript", "fp32")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "export"]  # nothing else beside the run
    assert sorted(str(p.relative_to(shared)) for p in shared.rglob("*")) == before


def test_calibration_data_can_be_a_csv_of_videos(checkpoints, motion_dataset, tmp_path):
    videos = sorted(motion_dataset.rglob("*.mkv"))[:5]
    (tmp_path / "cal.csv").write_text("path,label\n" + "\n".join(f"{v},{v.parent.name}" for v in videos))
    result = tiffin("export", checkpoints["video"], "--precision", "int8", "--calibration-data", tmp_path / "cal.csv",
                    "--check-data", tmp_path / "cal.csv", "--out", tmp_path / "a", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parity"]["samples"][-1]["inputs"][0][0] == 4  # real clips checked too
    missing = tiffin("export", checkpoints["video"], "--check-data", tmp_path / "nope.csv", "--out", tmp_path / "b")
    assert missing.exit_code == 2 and "--check-data" in missing.output


def test_check_data_adds_real_inputs_to_the_parity_report(checkpoints, tmp_path):
    result = tiffin("export", checkpoints["speech"], "--out", tmp_path / "a", "--check-data", checkpoints["clips"],
                    "--json")
    assert result.exit_code == 0, result.output
    samples = json.loads(result.stdout)["parity"]["samples"]
    assert len(samples) == 3 and samples[-1]["inputs"][0][0] == 4  # 4 real recordings in the last batch


def test_a_parity_check_past_its_time_budget_is_refused_after_the_batch_that_shows_it(checkpoints, tmp_path,
                                                                                       monkeypatch):
    """The gate's check batches are timed as they run: once the pace so far projects the whole check
    past --check-budget, the export stops there, says how long it would take, and writes nothing."""
    # bf16 on a CPU told it has bf16 instructions and on one told it has none (whatever this one has)
    for precision, bf16 in (("fp32", None), ("bf16", True), ("bf16", False)):
        if bf16 is not None:
            tell_cpu_bf16(monkeypatch, bf16)
        name = precision if bf16 is None else f"{precision}-{'with' if bf16 else 'without'}-bf16"
        out = tmp_path / name
        result = tiffin("export", checkpoints["video"], "--format", "torchscript", "--precision", precision,
                        "--out", out, "--check-budget", "0.001")
        assert result.exit_code == 2, result.output
        said = result.output
        assert "parity check: 1 of " in said and "past the budget of 0.001 s (--check-budget)" in said, said
        assert "nothing was written" in said and "Traceback" not in said
        if bf16 is False:  # a CPU without bf16: the reason and the way out
            assert "bf16 runs emulated" in said and "Export fp32" in said, said
        else:
            assert "emulated" not in said and "give --check-budget more seconds" in said, said
        assert not out.exists() and not list(tmp_path.glob(f".{name}.partial-*"))
    result = tiffin("export", checkpoints["video"], "--out", tmp_path / "ok", "--check-budget", "600")
    assert result.exit_code == 0, result.output
    result = tiffin("check", tmp_path / "ok", "--check-budget", "0.001")  # tiffin check is bounded the same way
    assert result.exit_code == 2 and "past the budget of 0.001 s" in result.output, result.output


@pytest.mark.parametrize("task", ["video", "speech"])
def test_fixed_batch_is_baked_in_and_checked_at_that_size(checkpoints, tmp_path, task):
    out = tmp_path / "a"
    result = tiffin("export", checkpoints[task], "--batch", "4", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["inputs"][0]["shape"][0] == 4 and "0" not in meta["dynamic_axes"].get(meta["inputs"][0]["name"], {})
    assert {s["inputs"][0][0] for s in meta["parity"]["samples"]} == {4}
    import onnx

    graph_input = onnx.load(str(out / "model.onnx")).graph.input[0]
    assert graph_input.type.tensor_type.shape.dim[0].dim_value == 4
    assert tiffin("check", out).exit_code == 0
    bad = tiffin("export", checkpoints[task], "--batch", "0", "--out", tmp_path / "b")
    assert bad.exit_code == 2 and "--batch 0" in bad.output


def test_a_hugging_face_speech_folder_exports_like_its_checkpoint(checkpoints, tmp_path):
    hf = checkpoints["speech"].parent.parent / "hf"
    out = tmp_path / "a"
    result = tiffin("export", hf, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    source = json.loads(result.stdout)["source"]  # a name, the weights' hash: no folder of the exporter's
    assert source["name"] == "hf" and source["sha256"] == sha256(hf / "model.safetensors")
    assert not Path(source["relative"]).is_absolute() and str(tmp_path) not in json.dumps(source)
    assert (out / source["relative"]).resolve() == hf.resolve()
    assert tiffin("check", out).exit_code == 0  # found again through the relative path
    files = sorted(checkpoints["clips"].glob("*.*"))[:2]
    texts = [json.loads(tiffin("predict", m, *files, "--json").stdout) for m in (out, checkpoints["speech"])]
    assert [r["text"] for r in texts[0]] == [r["text"] for r in texts[1]]
