"""ONNX exports past protobuf's 2 GB limit: the weights in one model.onnx.data beside the graph,
hashed in tiffin.json (`external_data`), signed with the folder, refused when changed or when the
graph names any other file. The threshold is forced to 0 so that the embedded tiny-en (1.4 MB)
takes the path a 2.4 GB Parakeet-CTC-0.6B takes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import tiffin
from tests.speech_media import write_corpus
from tiffin.artifact_json import read_artifact, sha256, validate_meta
from tiffin.errors import TiffinError
from tiffin.export import onnx_format

MODEL = "tiffin/tiny-en"
DATA = "model.onnx.data"


def _export(out: Path, *args: str, external: bool = True) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        if external:
            patch.setattr(onnx_format, "EXTERNAL_DATA_THRESHOLD", 0)
        result = tiffin("export", MODEL, "--out", out, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """The embedded speech model exported twice, fp32: as usual, and with its weights external."""
    root = tmp_path_factory.mktemp("external")
    write_corpus(root / "clips", 2)
    return {"normal": root / "normal", "normal_meta": _export(root / "normal", external=False),
            "external": root / "external", "meta": _export(root / "external"),
            "clips": sorted((root / "clips").iterdir())}


def _copy(exported: dict, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported["external"], tmp_path / "copy"))


def _refused(result, *words: str) -> None:
    assert result.exit_code == 2 and "\n" not in result.output.strip(), result.output
    for word in words:
        assert word in result.output, (word, result.output)


def test_weights_past_the_threshold_go_to_one_data_file_that_tiffin_json_records(exported):
    import onnx

    out, meta = exported["external"], exported["meta"]
    assert sorted(p.name for p in out.iterdir()) == sorted(["model.onnx", DATA, "tiffin.json", "tiffin.sig"])
    assert meta["external_data"] == {"file": DATA, "sha256": sha256(out / DATA)}
    assert meta == read_artifact(out) and "external_data" not in exported["normal_meta"]
    # the graph is small; the weights are in the data file
    assert (out / "model.onnx").stat().st_size * 5 < (exported["normal"] / "model.onnx").stat().st_size
    assert (out / DATA).stat().st_size > (exported["normal"] / "model.onnx").stat().st_size * 0.8
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    locations = {e.value for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for e in t.external_data if e.key == "location"}
    assert locations == {DATA}
    embedded = onnx_format.read_onnx_metadata(out / "model.onnx")
    assert embedded == {k: v for k, v in meta.items() if k not in ("parity", "sha256", "external_data")}


def test_an_external_data_artifact_predicts_and_checks_like_the_usual_export(exported):
    from tiffin.host import open_session

    normal, out, clips = exported["normal"], exported["external"], exported["clips"]
    answers = tiffin("predict", out, *clips, "--json")
    assert answers.exit_code == 0, answers.output
    assert json.loads(answers.stdout) == json.loads(tiffin("predict", normal, *clips, "--json").stdout)
    wave = np.random.default_rng(0).normal(0, 0.1, (2, 16000)).astype(np.float32)
    lengths = np.array([16000, 12000], dtype=np.int64)
    runtimes = ["onnxruntime"] + (["openvino"] if __import__("importlib").util.find_spec("openvino") else [])
    for runtime in runtimes:  # ONNX Runtime and OpenVINO both read the weights from the folder
        expected = open_session(normal, exported["normal_meta"], "cpu", runtime=runtime)(wave, lengths)
        got = open_session(out, exported["meta"], "cpu", runtime=runtime)(wave, lengths)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=runtime)
    check = tiffin("check", out)
    assert check.exit_code == 0, check.output


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_fp16_and_int8_exports_go_external_too(exported, tmp_path, precision):
    out = tmp_path / precision
    meta = _export(out, "--precision", precision)
    assert sorted(p.name for p in out.iterdir()) == sorted(["model.onnx", DATA, "tiffin.json", "tiffin.sig"])
    assert meta["external_data"]["sha256"] == sha256(out / DATA) and meta == read_artifact(out)
    answers = tiffin("predict", out, *exported["clips"], "--json")
    assert answers.exit_code == 0 and len(json.loads(answers.stdout)) == 2, answers.output


def test_a_changed_or_missing_data_file_is_refused_and_breaks_the_signature(exported, tmp_path):
    from tiffin.signing import SignatureError, verify_artifact

    out = _copy(exported, tmp_path)
    assert verify_artifact(out)
    data = bytearray((out / DATA).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / DATA).write_bytes(bytes(data))
    for args in (["predict", out, exported["clips"][0]], ["check", out]):
        _refused(tiffin(*args), DATA, "sha256", "export it again")
    with pytest.raises(SignatureError, match=f"{DATA} changed since it was signed"):
        verify_artifact(out)
    (out / DATA).unlink()
    _refused(tiffin("predict", out, exported["clips"][0]), DATA, "missing")
    with pytest.raises(SignatureError, match=f"{DATA} was signed and is gone"):
        verify_artifact(out)


def test_an_onnx_file_naming_an_external_file_tiffin_json_does_not_record_is_refused(exported, tmp_path):
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    # the graph re-pointed at a copy of the data under another name, its hash rewritten in tiffin.json
    out = _copy(exported, tmp_path)
    shutil.copyfile(out / DATA, out / "other.bin")
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    tensor = next(t for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    next(e for e in tensor.external_data if e.key == "location").value = "other.bin"
    (out / "model.onnx").write_bytes(graph.SerializeToString())
    meta = json.loads((out / "tiffin.json").read_text())
    (out / "tiffin.json").write_text(json.dumps({**meta, "sha256": sha256(out / "model.onnx")}))
    _refused(tiffin("predict", out, exported["clips"][0]), "other.bin", "does not record")
    # a usual artifact whose graph was moved to external data behind tiffin.json's back
    usual = Path(shutil.copytree(exported["normal"], tmp_path / "usual"))
    model = onnx.load(str(usual / "model.onnx"))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=DATA, size_threshold=1024)
    onnx.save(model, str(usual / "model.onnx"))
    meta = json.loads((usual / "tiffin.json").read_text())
    (usual / "tiffin.json").write_text(json.dumps({**meta, "sha256": sha256(usual / "model.onnx")}))
    _refused(tiffin("predict", usual, exported["clips"][0]), DATA, "does not record")


def test_external_data_belongs_to_onnx_and_is_never_a_path(exported):
    meta = exported["meta"]
    pt = {**meta, "format": "torchscript", "model_file": "model.pt"}
    for bad, words in ((pt, "keeps its weights in its model file"),
                       ({**meta, "external_data": {**meta["external_data"], "file": "../model.onnx.data"}},
                        "external_data.file")):
        with pytest.raises(TiffinError, match=words):
            validate_meta(bad, "tiffin.json")


def test_force_replaces_it_and_a_bento_model_carries_the_data_file(exported, tmp_path, monkeypatch):
    from tiffin.export.artifact_folder import check_replaceable
    from tiffin.serve.commands import store_model

    check_replaceable(exported["external"])  # every file of it is one an export writes
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    model = store_model(exported["external"])
    stored = Path(model.path)
    assert {"model.onnx", DATA, "tiffin.json"} <= {p.name for p in stored.iterdir()}
    assert read_artifact(stored) == exported["meta"]
