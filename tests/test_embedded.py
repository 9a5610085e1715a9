"""The embedded pretrained models: shipped files, zero-shot use, fine-tuning from them, their recipes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from tests.helpers import tiffin
from tiffin.artifact_json import sha256
from tiffin.train.backbones import EMBEDDED_MODELS, embedded_dir

# Measured on the shipped tiny-en: CER 0.40 on the sentence below ("VIOLD MAN WOKES HOMINVAER RANN"); margin above.
UNSEEN_SENTENCE_MAX_CER = 0.55


@pytest.mark.parametrize("name", sorted(EMBEDDED_MODELS))
def test_embedded_files_match_their_cards(name):
    folder = embedded_dir(name)
    card = json.loads((folder / "card.json").read_text())
    assert card["name"] == name and card["task"] == EMBEDDED_MODELS[name]
    assert card["files"] and card["command"].startswith("tiffin pretrain ")
    for file, entry in card["files"].items():
        assert sha256(folder / file) == entry["sha256"], file
    weights = folder / "model.safetensors"
    assert weights.stat().st_size <= 8 * 1024 * 1024
    text = (folder / "MODEL_CARD.md").read_text()
    assert card["command"] in text and card["files"]["model.safetensors"]["sha256"] in text
    assert all(str(v) in text for v in card["metrics"].values())


def test_backbones_list_embedded_models_first():
    for task in ("video", "speech"):
        result = tiffin("backbones", task, "--json")
        rows = json.loads(result.stdout)
        embedded = [r for r in rows if r["embedded"]]
        assert embedded and rows[: len(embedded)] == embedded
        assert all(r["weights_present"] for r in embedded)


def espeak(text: str, voice: str, path: Path) -> Path:
    assert shutil.which("espeak-ng"), "espeak-ng is needed (make test installs it when run as root)"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    return path


def test_tiny_en_transcribes_unseen_speech_zero_shot(tmp_path):
    """English it was not trained on, in a voice variant and at a speed it did not hear in that
    combination, through `tiffin predict` by name: close to the words, far from blank."""
    from tiffin.ctc import error_rates

    sentence = "the old man walked home in the rain"
    wav = espeak(sentence, "en-us+m4", tmp_path / "unseen.wav")
    result = tiffin("predict", "tiffin/tiny-en", wav, "--json")
    assert result.exit_code == 0, result.output
    text = json.loads(result.stdout)[0]["text"]
    _, cer = error_rates([sentence.upper()], [text])
    assert text and cer <= UNSEEN_SENTENCE_MAX_CER, (text, cer)


def test_tiny_motion_classifies_its_pretraining_classes(tmp_path):
    from tiffin.train.synthetic import PRETRAIN_CLASSES, make_motion_dataset

    make_motion_dataset(tmp_path, per_class=2, seed=12345, classes=list(PRETRAIN_CLASSES))
    result = tiffin("evaluate", "tiffin/tiny-motion", tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] >= 0.6  # 10 classes: chance is 0.1


def test_freeze_trains_only_the_head_and_learns(tmp_path):
    """Fine-tuning the embedded video model with --strategy freeze: every backbone weight stays as
    shipped, the new head learns a task of diagonal motions it was not pretrained on."""
    from safetensors.torch import load_file

    from tiffin.train.synthetic import DIAGONALS, make_motion_dataset

    make_motion_dataset(tmp_path / "data", per_class=10, seed=5, classes=list(DIAGONALS))
    make_motion_dataset(tmp_path / "val", per_class=3, seed=6, classes=list(DIAGONALS))
    result = tiffin("train", "video", "--train-folder", tmp_path / "data", "--val-folder", tmp_path / "val",
                    "--backbone", "tiffin/tiny-motion", "--strategy", "freeze", "--no-flip", "--batch-size", "8",
                    "--max-epochs", "6", "--learning-rate", "1e-2", "--num-workers", "0", "--no-progress",
                    "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    shipped = load_file(str(embedded_dir("tiffin/tiny-motion") / "model.safetensors"))
    head = "blocks.5.proj."  # X3D's classification layer
    body = {k: v for k, v in shipped.items() if not k.startswith(head) and v.is_floating_point()}
    changed = [k for k, v in body.items() if not torch.equal(v.float(), state["net.backbone." + k])]
    assert body and changed == []  # the frozen backbone is exactly the shipped one, BatchNorm statistics included
    assert state["net.backbone." + head + "weight"].shape[0] == len(DIAGONALS)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_val_acc"] >= 0.5  # 4 classes: chance is 0.25


def test_speech_freeze_changes_only_the_ctc_head(checkpoints, tmp_path):
    clips = checkpoints["clips"]
    csv = clips.parent / "train.csv"
    result = tiffin("train", "speech", "--train-csv", csv, "--backbone", "tiffin/tiny-en", "--strategy", "freeze",
                    "--max-steps", "3", "--num-workers", "0", "--no-progress", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    shipped = load_file(str(embedded_dir("tiffin/tiny-en") / "model.safetensors"))
    moved = sorted(k for k, v in shipped.items() if not torch.equal(v.float(), state["net.model." + k].float()))
    assert moved and all(k.startswith("lm_head.") for k in moved), moved


def test_full_size_backbones_missing_offline_name_the_embedded_one(motion_dataset, checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    video = tiffin("train", "video", "--train-folder", motion_dataset, "--backbone", "x3d_xs", "--max-steps", "1",
                   "--out", tmp_path / "v")
    assert video.exit_code == 2 and "tiffin/tiny-motion" in video.output
    # real data, so the refusal is the missing weights and not the CSV
    speech = tiffin("train", "speech", "--train-csv", checkpoints["clips"].parent / "train.csv",
                    "--backbone", "facebook/wav2vec2-base-960h", "--max-steps", "1", "--out", tmp_path / "s")
    assert speech.exit_code == 2 and "tiffin download facebook/wav2vec2-base-960h" in speech.output
    assert "tiffin/tiny-en" in speech.output


def test_export_an_embedded_model_by_name(tmp_path):
    result = tiffin("export", "tiffin/tiny-en", "--out", tmp_path / "tiny-en-onnx", "--json")
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["source"] == {"name": "tiffin/tiny-en", "embedded": True} and meta["parity"]["transcript_cer"] == 0.0
    check = tiffin("check", tmp_path / "tiny-en-onnx")
    assert check.exit_code == 0, check.output


def test_pretrain_recipes_run_at_toy_size(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("\n".join("red green blue cat dog fish runs sits home fast slow big small one two three four "
                                "five six seven eight nine ten".split()))
    speech = tiffin("pretrain", "speech", "--out", tmp_path / "speech", "--sentences", "16", "--val-sentences", "4",
                    "--scottish-sentences", "3", "--epochs", "1", "--batch-size", "8", "--word-list", words,
                    "--no-festival")
    assert speech.exit_code == 0, speech.output
    card = json.loads((tmp_path / "speech" / "tiny-en" / "card.json").read_text())
    assert {"val_cer", "scottish_zero_shot_cer"} <= set(card["metrics"]) and "--sentences 16" in card["command"]
    from tiffin.train.pretrain import speech_voices

    assert not any("scotland" in v for v in speech_voices(True))  # held out of pretraining
    video = tiffin("pretrain", "video", "--out", tmp_path / "video", "--per-class", "2", "--val-per-class", "1",
                   "--epochs", "1")
    assert video.exit_code == 0, video.output
    package = tmp_path / "video" / "tiny-motion"
    assert (package / "model.safetensors").stat().st_size <= 8 * 1024 * 1024
    assert json.loads((package / "spec.json").read_text())["spec"]["labels"][0] == "blink"
