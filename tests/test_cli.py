"""The root CLI: wiring, fast start (no heavy imports), synthetic data command, predict input checks."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from tiffin.cli import app
from tiffin.video_io import probe


def test_cli_imports_no_torch_until_a_command_needs_it():
    code = ("import sys, tiffin.cli; heavy = [m for m in ('torch', 'pytorch_lightning', 'pytorchvideo', "
            "'transformers', 'onnxruntime', 'onnx', 'bentoml', 'av') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_every_stage():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    import typer

    commands = set(typer.main.get_command(app).commands)
    assert commands == {"train", "backbones", "synth", "pretrain", "export", "check", "benchmark", "serve", "build",
                        "predict", "evaluate", "lm", "trust", "download", "stream"}
    for command in commands:  # each listed, and its own --help works
        assert command in result.output
        assert CliRunner().invoke(app, [command, "--help"]).exit_code == 0, command
    proc = subprocess.run([sys.executable, "-m", "tiffin", "train", "video", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--train-folder" in proc.stdout


def test_synth_video_writes_a_decodable_dataset(tmp_path):
    result = CliRunner().invoke(app, ["synth", "video", str(tmp_path / "d"), "--per-class", "2",
                                      "--classes", "move_left,move_up"])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "d").rglob("*.*"))
    assert {f.parent.name for f in files} == {"move_left", "move_up"} and len(files) == 4
    assert all(probe(f).duration > 1.0 for f in files)
    bad = CliRunner().invoke(app, ["synth", "video", str(tmp_path / "e"), "--classes", "spin"])
    assert bad.exit_code == 2 and "spin" in bad.output


def test_synth_speech_speaks_the_lines_of_a_text_file(tmp_path):
    import csv

    from tiffin.audio_io import read_audio

    text = tmp_path / "text.txt"
    text.write_text("The cat sat.\nIt was 1990 then\n\n  Don't stop, believing!\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["synth", "speech", str(tmp_path / "s"), "--count", "2", "--text", str(text)])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "s" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the line with digits is not spoken (espeak-ng would say words the transcript lacks)
    assert sorted(r["targets"] for r in rows) == ["don't stop believing", "the cat sat"]
    for row in rows:
        wave, rate = read_audio(tmp_path / "s" / row["speech_files"])
        assert len(wave) / rate > 0.5
    too_many = CliRunner().invoke(app, ["synth", "speech", str(tmp_path / "t"), "--count", "3", "--text", str(text)])
    assert too_many.exit_code == 2 and "2 usable sentences" in too_many.output and "--count 2" in too_many.output
    both = CliRunner().invoke(app, ["synth", "speech", str(tmp_path / "u"), "--text", str(text), "--word-list",
                                    str(text)])
    assert both.exit_code == 2 and "give one" in both.output
    assert not (tmp_path / "t").exists() and not (tmp_path / "u").exists()


def test_predict_refuses_what_is_not_a_checkpoint(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    (tmp_path / "fake.ckpt").write_bytes(b"garbage")
    (tmp_path / "v.mp4").write_bytes(b"")
    for model, needle in [("model.onnx", ".ckpt"), ("fake.ckpt", "not a readable checkpoint"),
                          ("missing.ckpt", "no such checkpoint")]:
        result = CliRunner().invoke(app, ["predict", str(tmp_path / model), str(tmp_path / "v.mp4")])
        assert result.exit_code == 2 and needle in result.output, result.output
