"""`tiffin train speech` end to end: run folder, Hugging Face export, predict, bad input, learning, chunking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Processor
from typer.testing import CliRunner

from tests.speech_media import utterance, write_corpus
from tiffin.cli import app
from tiffin.ctc import BASE_960H_TOKENS
from tiffin.spec import SpeechSpec
from tiffin.train.backbones import SPEECH_BACKBONES
from tiffin.train.predict import LoadedSpeechModel
from tiffin.train.speech_model import SpeechNet
from tiffin.train.speech_task import SpeechRecognitionTask

SMALL = ["--backbone", "tiffin/wav2vec2-tiny", "--batch-size", "4", "--num-workers", "0", "--no-progress",
         "--seed", "0", "--learning-rate", "1e-3"]


def tiffin(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("speech")
    rows = write_corpus(root / "clips", 20)
    lines = [",speech_files,targets"] + [f"{i},clips/{n},{t}" for i, (n, t) in enumerate(rows)]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def speech_run(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "speech"
    result = tiffin("train", "speech", "--train-csv", corpus / "train.csv", "--max-epochs", "2", "--out", out, *SMALL)
    assert result.exit_code == 0, result.output
    return out


def test_run_folder_metrics_and_checkpoint(speech_run):
    metrics = json.loads((speech_run / "metrics.json").read_text())
    assert metrics["task"] == "speech-recognition" and metrics["vocab"] == list(BASE_960H_TOKENS)
    assert metrics["train_utterances"] == 18 and metrics["val_utterances"] == 2
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert all(0 <= e["val_cer"] and 0 <= e["val_wer"] for e in metrics["epochs"])
    assert 0 <= metrics["padding_fraction"] <= metrics["padding_fraction_unbucketed"]
    assert metrics["best"]["samples"] and {"reference", "hypothesis"} <= set(metrics["best"]["samples"][0])
    checkpoint = torch.load(speech_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    meta = checkpoint["tiffin"]
    assert meta["task"] == "speech-recognition" and meta["model_config"]["hidden_size"] == 64
    assert SpeechSpec.from_dict(meta["spec"]).vocab == BASE_960H_TOKENS


def test_hugging_face_folder_loads_with_transformers_and_predicts_like_the_checkpoint(speech_run, corpus):
    hf = speech_run / "hf"
    model = Wav2Vec2ForCTC.from_pretrained(hf)
    processor = Wav2Vec2Processor.from_pretrained(hf)
    assert processor.tokenizer.convert_ids_to_tokens(5) == "E" and model.config.vocab_size == 32
    files = sorted((corpus / "clips").glob("*.*"))[:3]
    from_ckpt = tiffin("predict", speech_run / "checkpoints" / "best.ckpt", *files, "--json")
    from_hf = tiffin("predict", hf, *files, "--json")
    assert from_ckpt.exit_code == 0 and from_hf.exit_code == 0, from_ckpt.output + from_hf.output
    a, b = json.loads(from_ckpt.stdout), json.loads(from_hf.stdout)
    assert [r["file"] for r in a] == [str(f) for f in files]
    assert [r["text"] for r in a] == [r["text"] for r in b]
    assert all(r["duration_s"] > 0.1 for r in a)


def test_bad_rows_are_skipped_and_counted_or_fatal_with_strict(corpus, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    (data / "clips" / "empty.wav").write_bytes(b"")
    with open(data / "train.csv", "a") as f:
        f.write("98,clips/empty.wav,hello\n99,clips/gone.wav,hello\n100,clips/u000.wav,\n")
    result = tiffin("train", "speech", "--train-csv", data / "train.csv", "--max-steps", "1", "--out", tmp_path / "r",
                    *SMALL)
    assert result.exit_code == 0, result.output
    skipped = json.loads((tmp_path / "r" / "metrics.json").read_text())["skipped_rows"]
    assert sorted(s["row"] for s in skipped) == ["train.csv line 22", "train.csv line 23", "train.csv line 24"]
    assert "3 row(s) were skipped" in result.output
    strict = tiffin("train", "speech", "--train-csv", data / "train.csv", "--strict", "--out", tmp_path / "s", *SMALL)
    errors = [line for line in strict.output.splitlines() if line.startswith("error: ")]
    assert strict.exit_code == 2 and len(errors) == 1 and "train.csv line 22" in errors[0] and "empty.wav" in errors[0]


def test_user_mistakes_are_one_line_errors(corpus, tmp_path, monkeypatch):
    def one_line(result, needle):
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert result.exit_code == 2 and len(errors) == 1 and needle in errors[0], result.output

    base = ["train", "speech", "--train-csv", corpus / "train.csv", "--out", tmp_path / "r"]
    one_line(tiffin(*base, *SMALL, "--audio-column", "wav"), "--audio-column")
    one_line(tiffin(*base, *SMALL, "--strategy", "thaw"), "--strategy thaw")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    one_line(tiffin(*base, "--backbone", "facebook/wav2vec2-base-960h"), str(tmp_path / "hub"))
    one_line(tiffin("train", "speech", "--train-folder", tmp_path / "nothing"), "no such folder")
    assert not (tmp_path / "r").exists()


def test_vocab_from_data_trains_a_new_head(corpus, tmp_path):
    lines = (corpus / "train.csv").read_text().splitlines()
    german = [lines[0]] + [line.replace("red", "rot").replace("two", "zwö") for line in lines[1:]]
    (corpus / "de.csv").write_text("\n".join(german) + "\n")
    out = tmp_path / "de"
    result = tiffin("train", "speech", "--train-csv", corpus / "de.csv", "--vocab", "from-data", "--max-steps", "2",
                    "--out", out, *SMALL)
    assert result.exit_code == 0, result.output
    vocab = json.loads((out / "metrics.json").read_text())["vocab"]
    assert "ö" in vocab and "E" not in vocab and vocab[:5] == ["<pad>", "<s>", "</s>", "<unk>", "|"]
    assert json.loads((out / "hf" / "vocab.json").read_text())["ö"] == vocab.index("ö")


def test_ctc_loss_falls_on_a_fixed_batch(corpus, tmp_path):
    from tiffin.train.speech_data import LengthBucketSampler, SpeechDataset, check_rows, collate_speech, read_table
    from tiffin.ctc import Vocabulary

    rows = read_table(corpus / "train.csv", "speech_files", "targets", "--train-csv")[:8]
    utts, _ = check_rows(rows, Vocabulary(), 16000)
    spec = SpeechSpec(vocab=BASE_960H_TOKENS)
    config = json.loads(Wav2Vec2Config(**SPEECH_BACKBONES["tiffin/wav2vec2-tiny"].config, vocab_size=32).to_json_string())
    pl.seed_everything(0)
    task = SpeechRecognitionTask("tiffin/wav2vec2-tiny", spec.to_dict(), config, learning_rate=3e-3,
                                 freeze_feature_encoder=False)
    loader = torch.utils.data.DataLoader(SpeechDataset(utts, 16000), collate_fn=collate_speech,
                                         batch_sampler=LengthBucketSampler([u.samples for u in utts], 8, shuffle=False))
    trainer = pl.Trainer(max_epochs=40, accelerator="cpu", logger=pl.loggers.CSVLogger(tmp_path), log_every_n_steps=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=1.0)
    trainer.fit(task, loader)
    import csv

    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        losses = [float(r["train_loss_epoch"]) for r in csv.DictReader(f) if r.get("train_loss_epoch")]
    assert len(losses) == 40 and np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


def test_long_audio_in_overlapping_chunks_gives_the_one_pass_transcript(tmp_path):
    # A model whose outputs depend on nearby samples only (layer-norm feature encoder, no attention layers,
    # no utterance normalisation): its positional conv sees 16 frames (0.32 s) a side, so with 0.4 s
    # strides chunked and one-pass logits must agree frame for frame.
    config = Wav2Vec2Config(**{**SPEECH_BACKBONES["tiffin/wav2vec2-tiny"].config, "num_hidden_layers": 0},
                            feat_extract_norm="layer", do_stable_layer_norm=True, vocab_size=32)
    torch.manual_seed(0)
    spec = SpeechSpec(normalize=False, vocab=BASE_960H_TOKENS, chunk_seconds=1.0, stride_seconds=0.4)
    net = SpeechNet(Wav2Vec2ForCTC(config).eval(), spec)
    wave = np.concatenate([utterance(["one", "red", "cat", "go"], rng=np.random.default_rng(i)) for i in range(3)])
    assert len(wave) > 3 * 16000
    # windows run one per call and all in one batch: the same logits (padding never leaks in)
    chunked = LoadedSpeechModel(net, spec, "t").predictor(windows_per_call=1).recording_logits(wave)
    batched = LoadedSpeechModel(net, spec, "t").predictor(windows_per_call=None).recording_logits(wave)
    np.testing.assert_allclose(batched, chunked, atol=1e-4)
    whole_spec = SpeechSpec(normalize=False, vocab=BASE_960H_TOKENS, chunk_seconds=60.0)
    whole = LoadedSpeechModel(net, whole_spec, "t").predictor().recording_logits(wave)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, atol=1e-3)
    from tiffin.ctc import Vocabulary

    text = Vocabulary().decode_logits(whole)
    assert text and Vocabulary().decode_logits(chunked) == text
    sf.write(tmp_path / "long.wav", wave, 16000)


def test_resume_continues_a_speech_run(speech_run, corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(speech_run, run)
    result = tiffin("train", "speech", "--train-csv", corpus / "train.csv", "--max-epochs", "3", "--out", run,
                    "--resume", *SMALL)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2] and metrics["vocab"] == list(BASE_960H_TOKENS)


def test_ddp_speech_on_two_cpu_processes(corpus, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "tiffin", "train", "speech", "--train-csv", str(corpus / "train.csv"),
           "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp", "--max-epochs", "1", "--out", str(out), *SMALL]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # 18 utterances in batches of 4 = 5 batches, split over 2 processes: 3 steps each (one batch repeated)
    assert metrics["global_step"] == 3 and metrics["epochs"][0]["val_cer"] is not None
    assert (out / "hf" / "config.json").is_file()
