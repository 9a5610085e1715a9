"""tiffin.json: one schema (tiffin/artifact_schema.py), documented in README from it, one writer.

Fast: nothing here exports a model (tests/test_export.py does, through the same writer).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from tiffin import artifact_schema
from tiffin.artifact_formats import ARTIFACT_FORMATS, MODEL_FILES
from tiffin.artifact_json import validate_meta, write_meta
from tiffin.artifact_schema import TASK_MODELS, field_table
from tiffin.errors import TiffinError

ROOT = Path(__file__).resolve().parent.parent
OLD_ARTIFACTS = Path(__file__).resolve().parent / "artifact_json_v1"

VIDEO = {
    "schema_version": 1, "task": "video-classification", "backbone": "x3d_xs", "format": "onnx", "precision": "fp32",
    "model_file": "model.onnx", "sha256": "0" * 64,
    "inputs": [{"name": "frames", "dtype": "uint8", "shape": ["batch", 4, 32, 32, 3]}],
    "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}],
    "dynamic_axes": {"frames": {"0": "batch"}, "logits": {"0": "batch"}},
    "preprocessing": {"num_frames": 4, "clip_duration": 1.0, "side_size": 36, "crop_size": 32},
    "labels": ["left", "right"], "opset": 17,
    "source": {"name": "best.ckpt", "sha256": None, "relative": "../checkpoints/best.ckpt"},
    "parity": {"tolerance": {"atol": 1e-4, "rtol": 1e-3, "min_top1_agreement": 1.0, "max_cer": 0.0},
               "samples": [{"inputs": [[3, 4, 32, 32, 3]], "max_abs_diff": 1e-6, "max_rel_diff": 1e-5,
                            "within_tolerance": True}], "max_abs_diff": 1e-6, "top1_agreement": 1.0},
}


def _readme_block(start: str, end: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def test_readme_documents_every_field_of_the_schema():
    """README's table is the schema's own (python -m tiffin.artifact_schema prints it): a field
    added, renamed or redocumented in the models and not in README fails here."""
    readme = _readme_block("<!-- tiffin.json fields: begin -->", "<!-- tiffin.json fields: end -->")
    assert readme == field_table(), "README's tiffin.json table is stale: paste `python -m tiffin.artifact_schema`"


def test_every_field_of_every_model_says_what_it_is():
    models = [m for m in vars(artifact_schema).values()
              if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == artifact_schema.__name__]
    assert len(models) >= 14
    for model in models:
        assert model.__name__.startswith("_") or model.__doc__, model
        for name, field in model.model_fields.items():
            assert field.description and len(field.description) > 5, f"{model.__name__}.{name} has no description"


def test_readme_format_table_is_the_formats_table():
    """The one formats table (tiffin.artifact_formats.ARTIFACT_FORMATS), the exporters' and README's agree."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| format | file | precisions | how |\n", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([\w.]+) \| ([\w, ]+) \|", table, flags=re.M)
    assert [(name, file, tuple(p.strip() for p in precisions.split(","))) for name, file, precisions in rows] == [
        (f.name, f.file, f.precisions) for f in ARTIFACT_FORMATS.values()]
    from tiffin.export.formats import FORMATS

    assert {n: (f.file, f.precisions, f.uses_opset) for n, f in FORMATS.items()} == {
        n: (f.file, f.precisions, f.uses_opset) for n, f in ARTIFACT_FORMATS.items()}
    assert MODEL_FILES == {n: f.file for n, f in ARTIFACT_FORMATS.items()}


def test_each_task_row_has_its_schema_model():
    from tiffin.tasks import TASKS

    assert {name: model.classes_key for name, model in TASK_MODELS.items()} == {
        name: row.classes_key for name, row in TASKS.items()}


def test_the_writer_validates_writes_atomically_and_returns_what_a_reader_reads(tmp_path):
    meta = {**VIDEO, "parity": {**VIDEO["parity"], "samples": [
        {**VIDEO["parity"]["samples"][0], "inputs": [(3, 4, 32, 32, 3)]}]}}  # tuples, as the gate makes them
    written = write_meta(tmp_path, meta)
    assert written == json.loads((tmp_path / "tiffin.json").read_text(encoding="utf-8"))
    assert written["parity"]["samples"][0]["inputs"] == [[3, 4, 32, 32, 3]]
    assert validate_meta(written, "x") == written
    assert [p.name for p in tmp_path.iterdir()] == ["tiffin.json"]  # no temporary file left
    again = write_meta(tmp_path, {**written, "runtime": "openvino"})  # tiffin benchmark --record's edit
    assert json.loads((tmp_path / "tiffin.json").read_text())["runtime"] == again["runtime"] == "openvino"


@pytest.mark.parametrize("edit,field", [
    (lambda m: m.update(notes="x"), "notes"),
    (lambda m: m["parity"].update(speed=1.0), "parity.speed"),
    (lambda m: m["source"].update(revision="main"), "source.revision"),
])
def test_the_writer_refuses_a_key_the_schema_does_not_document(tmp_path, edit, field):
    """A reader keeps such a key (forward compatibility), the writer never writes one."""
    meta = copy.deepcopy(VIDEO)
    edit(meta)
    assert validate_meta(meta, "x") is meta
    (tmp_path / "tiffin.json").write_text("old")
    with pytest.raises(TiffinError, match=rf"{re.escape(field)}: not a field of tiffin/artifact_schema.py"):
        write_meta(tmp_path, meta)
    assert (tmp_path / "tiffin.json").read_text() == "old" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("edit,field", [
    (lambda m: m["preprocessing"].update(denoise=True), "preprocessing.denoise"),
    (lambda m: m["inputs"][0].update(layout="NTHWC"), "inputs.0.layout"),
    (lambda m: m.update(precision="int8", format="torchscript", model_file="model.pt"), "precision int8"),
    (lambda m: m["parity"].update(samples=[]), "parity.samples"),
    (lambda m: m.update(opset=0), "opset"),
    (lambda m: m.update(quantization={"method": "magic", "reduce_range": True, "why": ""}), "quantization.method"),
    (lambda m: m.update(source={"sha256": None}), "source"),
    (lambda m: m.update(versions={"torch": 2}), "versions.torch"),
])
def test_a_reader_refuses_what_changes_the_computation_or_is_malformed(edit, field):
    meta = copy.deepcopy(VIDEO)
    edit(meta)
    with pytest.raises(TiffinError, match=re.escape(field)):
        validate_meta(meta, "x")


def test_a_speech_decoder_is_validated():
    meta = {**VIDEO, "task": "speech-recognition", "labels": None, "vocab": list("<>|ab"),
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "frames", 5]}],
            "preprocessing": {"sample_rate": 16000, "conv_stride": [5, 2], "conv_kernel": [10, 3]},
            "decoder": {"kind": "beam", "beam_width": 20, "lm_weight": 2.0, "word_score": 0.0, "beam_threshold": 25.0,
                        "words": {"file": "words.txt", "sha256": "a" * 64}, "hotwords": [], "hotword_weight": 5.0,
                        "tuned_on": {"data": "dev.csv", "utterances": 8, "wer": 0.1, "given_wer": 0.3}}}
    del meta["labels"]
    assert validate_meta(meta, "x") is meta
    for key, value, field in (("words", {"file": "../x", "sha256": "a" * 64}, "decoder.words.file"),
                              ("alpha", 1, "decoder.alpha")):
        with pytest.raises(TiffinError, match=re.escape(field)):
            validate_meta({**meta, "decoder": {**meta["decoder"], key: value}}, "x")


@pytest.mark.parametrize("path", sorted(OLD_ARTIFACTS.glob("*.json")), ids=lambda p: p.stem)
def test_artifacts_written_before_the_schema_models_still_read(path):
    """tiffin.json files written by the exporter before it went through these models (both tasks,
    ONNX int8, a decoder tuned on a dev set, a recorded runtime), read and rewritten unchanged."""
    meta = json.loads(path.read_text(encoding="utf-8"))
    assert validate_meta(meta, str(path)) is meta
    assert artifact_schema.undocumented(TASK_MODELS[meta["task"]].model_validate(meta)) == []


def test_legacy_source_string_still_reads():
    assert validate_meta({**VIDEO, "source": "/old/runs/a/checkpoints/best.ckpt"}, "x")


def test_the_reader_imports_no_pydantic_until_it_reads_and_nothing_heavy_then():
    code = ("import sys; import tiffin.artifact_json, tiffin.export.formats; before = 'pydantic' in sys.modules; "
            "import tiffin.artifact_schema; heavy = [m for m in ('torch', 'av', 'onnxruntime', 'onnx', 'bentoml', "
            "'tiffin.tasks', 'tiffin.host') if m in sys.modules]; print(before, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False []"
