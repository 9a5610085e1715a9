"""The Python API as Lightning Flash users write it: both listings of the README's "Coming from
Lightning Flash" run here with only imports, paths, backbones and sizes changed, and carry on
past Flash: export behind the parity gate, serving as a child process, answers over HTTP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import pytorch_lightning as pl

from tests.helpers import tiffin as run_cli
from tests.helpers import post_multipart
from tiffin.ctc import error_counts
from tiffin.errors import TiffinError
from tiffin.train.synthetic import make_motion_dataset, make_speech_dataset

# classes the embedded tiny-motion saw in pretraining whose motion a horizontal flip (on by
# default, as in Flash) does not change
CLASSES = ["grow", "move_down", "move_up", "shrink"]
SCOTTISH = ["en-gb-scotland", "en-gb-scotland+m3", "en-gb-scotland+f2"]


def accuracy(predictions: list[str | None], files: list[Path]) -> float:
    return sum(p == f.parent.name for p, f in zip(predictions, files)) / len(files)


@pytest.fixture(scope="module")
def video_listing(tmp_path_factory):
    """Flash's video listing, run: the datamodule, model and trainer it made, and what it printed."""
    from tiffin import Trainer
    from tiffin.video import VideoClassificationData, VideoClassifier

    root = tmp_path_factory.mktemp("kinetics")
    for split, per_class, seed in (("train", 12, 1), ("val", 2, 2), ("predict", 3, 3)):
        make_motion_dataset(root / split, per_class=per_class, seed=seed, size=(80, 60), classes=CLASSES)
    pl.seed_everything(0)
    # --- the listing (clip_duration: the embedded backbone's clip; batch_size 4: more steps in 3 epochs;
    # accelerator cpu; precision 32: on a CPU without bf16, 16-mixed's bf16 runs emulated, 4x slower)
    datamodule = VideoClassificationData.from_folders(
        train_folder=root / "train", val_folder=root / "val",
        clip_sampler="uniform", clip_duration=1.6, decode_audio=False, batch_size=4)
    model = VideoClassifier(backbone="tiffin/tiny-motion", labels=datamodule.labels, pretrained=True,
                            learning_rate=1e-2)
    untrained = VideoClassifier(backbone="tiffin/tiny-motion", labels=datamodule.labels, pretrained=True)
    trainer = Trainer(max_epochs=3, accelerator="cpu", devices=1, precision="32", enable_progress_bar=False,
                      default_root_dir=root)
    trainer.finetune(model, datamodule=datamodule, strategy="freeze")
    datamodule = VideoClassificationData.from_folders(predict_folder=root / "predict", batch_size=4)
    predictions = trainer.predict(model, datamodule=datamodule, output="labels")
    trainer.save_checkpoint(root / "video_classification.pt")
    backbones = VideoClassifier.available_backbones()
    # ---
    before = trainer.predict(untrained, datamodule=datamodule, output="labels")
    return {"root": root, "model": model, "trainer": trainer, "datamodule": datamodule, "predictions": predictions,
            "before": before, "backbones": backbones, "checkpoint": root / "video_classification.pt"}


def test_video_listing_learns_predicts_and_saves(video_listing):
    files = video_listing["datamodule"].predict_files
    assert len(files) == 12 and all(p in CLASSES for p in video_listing["predictions"])
    before, after = accuracy(video_listing["before"], files), accuracy(video_listing["predictions"], files)
    assert after >= 0.5 and after > before, (before, after)
    assert {"tiffin/tiny-motion", "slowfast_r50", "x3d_xs"} <= set(video_listing["backbones"])
    assert video_listing["backbones"][0] == "tiffin/tiny-motion"  # embedded first
    # the checkpoint describes itself as `tiffin train`'s do, and the model records the data's clip
    checkpoint = __import__("torch").load(video_listing["checkpoint"], weights_only=False)
    assert checkpoint["tiffin"]["task"] == "video-classification"
    assert checkpoint["tiffin"]["spec"]["labels"] == CLASSES and checkpoint["tiffin"]["spec"]["clip_duration"] == 1.6
    # default_root_dir= made it a run folder, as `tiffin train --out` keeps one
    root, trainer = video_listing["root"], video_listing["trainer"]
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics == trainer.run_metrics and [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2]
    assert metrics["val_acc"] == pytest.approx(float(trainer.callback_metrics["val_acc"]))
    assert metrics["strategy"] == "freeze" and metrics["labels"] == CLASSES and metrics["val_videos"] == 8
    assert (root / "checkpoints" / "best.ckpt").is_file() and (root / "confusion_matrix.png").is_file()
    best = __import__("torch").load(root / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == metrics["best_epoch"] and metrics["best_val_acc"] == max(e["val_acc"] for e in metrics["epochs"])


def test_the_cli_reads_what_the_api_saved_and_the_api_reads_the_cli(video_listing, checkpoints, videos):
    import tiffin
    from tiffin.video import VideoClassifier

    files = video_listing["datamodule"].predict_files
    result = run_cli("predict", video_listing["checkpoint"], *files, "--json", "--top-k", "4")
    assert result.exit_code == 0, result.output
    from_cli = json.loads(result.output)
    assert [r["labels"][0]["label"] for r in from_cli] == video_listing["predictions"]
    reloaded = VideoClassifier.load_from_checkpoint(video_listing["checkpoint"])
    assert reloaded.predict(files, top_k=4) == from_cli
    assert tiffin.load(video_listing["checkpoint"]).predict(files, top_k=4) == from_cli
    # and the other way round: a `tiffin train` checkpoint through the API
    expected = json.loads(run_cli("predict", checkpoints["video"], *videos[:3], "--json").output)
    assert VideoClassifier.load_from_checkpoint(checkpoints["video"]).predict(videos[:3]) == expected
    assert tiffin.load(checkpoints["video"]).predict(videos[:3]) == expected


def test_video_export_check_and_serve_answer_like_predict(video_listing, tmp_path, monkeypatch):
    from tiffin.api import Artifact

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    model, files = video_listing["model"], video_listing["datamodule"].predict_files
    artifact = model.export(format="onnx", precision="fp32", out=tmp_path / "onnx")
    assert isinstance(artifact, Artifact) and artifact.meta["parity"]["top1_agreement"] >= 0.9
    assert artifact.meta["source"]["name"] == "in-memory model"
    assert artifact.check()["max_abs_diff"] <= artifact.meta["parity"]["tolerance"]["atol"] + 1e-6
    answers = artifact.predict(files, top_k=2)
    torch_answers = model.predict(files, top_k=2)
    assert [a["labels"][0]["label"] for a in answers] == [a["labels"][0]["label"] for a in torch_answers]
    with artifact.serve(port=0) as server:
        assert server.running() and server.pid != os.getpid()
        for file, expected in list(zip(files, answers))[:3]:
            status, body = post_multipart(server.url + "/classify", "video", file.read_bytes(), file.name, {"top_k": "2"})
            assert status == 200 and body["labels"] == expected["labels"]
    assert not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == psutil.STATUS_ZOMBIE


def test_plain_lightning_fits_tiffins_modules_and_callbacks_and_loggers_are_called(motion_dataset, tmp_path):
    from pytorch_lightning.callbacks import Callback
    from pytorch_lightning.loggers import CSVLogger

    from tiffin import Trainer
    from tiffin.video import VideoClassificationData, VideoClassifier

    dm = VideoClassificationData.from_folders(train_folder=motion_dataset, val_split=0.25, batch_size=4)
    model = VideoClassifier(backbone="x3d_xs", labels=dm.labels, pretrained=False, num_frames=4, crop_size=32)
    pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(model, dm)
    assert model.trainer.global_step == 2

    class Recorder(Callback):
        batches = 0

        def on_train_batch_end(self, *args):
            Recorder.batches += 1

    trainer = Trainer(max_steps=2, callbacks=[Recorder()], logger=CSVLogger(tmp_path, name="logs"),
                      log_every_n_steps=1, enable_progress_bar=False, enable_checkpointing=False)
    trainer.finetune(model, datamodule=dm, strategy=("freeze_unfreeze", 1))
    assert Recorder.batches == 2 and model.hparams.strategy == "freeze_unfreeze" and model.hparams.unfreeze_epoch == 1
    assert "train_loss_step" in (tmp_path / "logs" / "version_0" / "metrics.csv").read_text()


def test_api_errors_are_one_line_tiffin_errors(motion_dataset, tmp_path):
    from tiffin import Trainer
    from tiffin.video import VideoClassificationData, VideoClassifier

    dm = VideoClassificationData.from_folders(train_folder=motion_dataset, batch_size=4)
    model = VideoClassifier(backbone="x3d_xs", labels=dm.labels, pretrained=False, num_frames=4, crop_size=32)
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    cases = [
        (lambda: trainer.finetune(model, datamodule=dm, strategy="thaw"), "strategy='thaw'"),
        (lambda: trainer.finetune(model, datamodule=dm, strategy=("freeze_unfreeze", -1)), "freeze_unfreeze"),
        (lambda: VideoClassificationData.from_folders(train_folder=tmp_path / "nowhere"), "train_folder"),
        (lambda: VideoClassificationData.from_folders(train_folder=motion_dataset, decode_audio=True), "decode_audio"),
        (lambda: VideoClassifier(backbone="x3d_xs", pretrained=False), "labels=datamodule.labels"),
        (lambda: trainer.predict(model, datamodule=dm, output="labels"), "no files to predict"),
        (lambda: trainer.fit(VideoClassifier(backbone="x3d_xs", labels=["a", "b"], pretrained=False, num_frames=4,
                                             crop_size=32), datamodule=dm), "differ from the data's"),
    ]
    for call, words in cases:
        with pytest.raises(TiffinError) as info:
            call()
        assert words in str(info.value) and "\n" not in str(info.value)
    predict_dm = VideoClassificationData.from_files(predict_files=[motion_dataset])
    with pytest.raises(TiffinError, match="output='transcripts'"):
        trainer.predict(model, datamodule=predict_dm, output="transcripts")


def test_16_mixed_on_a_cpu_runs_as_bf16_mixed_and_says_so(capsys):
    from tiffin import Trainer

    trainer = Trainer(accelerator="cpu", precision="16-mixed", logger=False, enable_checkpointing=False)
    assert trainer.precision == "bf16-mixed"
    assert "runs as 'bf16-mixed'" in capsys.readouterr().err


def test_import_tiffin_and_an_onnx_artifact_need_no_torch(artifacts, videos):
    code = ("import sys, tiffin; a = tiffin.load(sys.argv[1]); r = a.predict(sys.argv[2:]); "
            "assert 'torch' not in sys.modules and 'pytorch_lightning' not in sys.modules, 'torch imported'; "
            "print(r[0]['labels'][0]['label'])")
    result = subprocess.run([sys.executable, "-c", code, str(artifacts["video"]), str(videos[0])],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = json.loads(run_cli("predict", artifacts["video"], videos[0], "--json").output)
    assert result.stdout.strip() == expected[0]["labels"][0]["label"]


def test_speech_listing_learns_transcribes_and_serves_from_python(tmp_path, monkeypatch, checkpoints, recordings):
    import tiffin
    from tiffin import Trainer
    from tiffin.speech import SpeechRecognition, SpeechRecognitionData

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    make_speech_dataset(tmp_path / "speech", 48, 0, SCOTTISH)
    make_speech_dataset(tmp_path / "heldout", 12, 99, SCOTTISH)
    rows = list(csv.DictReader(open(tmp_path / "heldout" / "train.csv")))
    files = [tmp_path / "heldout" / r["speech_files"] for r in rows]
    references = [r["targets"].upper() for r in rows]  # tiny-en spells in capitals, as wav2vec2-base-960h does

    def cer(model) -> float:
        _, _, edits, chars = error_counts(references, [r["text"] for r in model.predict(files)])
        return edits / chars

    pl.seed_everything(0)
    # --- the listing (backbone: the embedded tiny-en; learning_rate sized for one short epoch)
    datamodule = SpeechRecognitionData.from_csv(
        "speech_files", "targets", train_file="speech/train.csv", test_file="heldout/train.csv", batch_size=4)
    model = SpeechRecognition(backbone="tiffin/tiny-en", learning_rate=5e-4)
    before = cer(model)
    trainer = Trainer(max_epochs=1, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.finetune(model, datamodule=datamodule, strategy="no_freeze")
    datamodule = SpeechRecognitionData.from_files(predict_files=[str(f) for f in files[:2]], batch_size=4)
    predictions = trainer.predict(model, datamodule=datamodule)
    server = model.serve(port=0)
    # ---
    try:
        assert server.running() and os.getpid() == psutil.Process().pid  # the caller is still itself
        after = cer(model)
        assert after < before, (before, after)
        assert predictions == [r["text"] for r in model.predict(files[:2])]
        served = tiffin.load(server.cleanup[0] / "artifact")
        for file in files[:2]:
            status, body = post_multipart(server.url + "/transcribe", "audio", file.read_bytes(), file.name)
            assert status == 200 and body["text"] == served.predict([file])[0]["text"]
    finally:
        server.stop()
    assert not psutil.Process().children(recursive=True)
    assert not server.cleanup and not any(tmp_path.glob("tiffin-serve-model-*"))
    test_metrics = trainer.test(model, datamodule=SpeechRecognitionData.from_csv(
        "speech_files", "targets", test_file="heldout/train.csv"), verbose=False)[0]
    assert 0 <= test_metrics["test_cer"] < 1
    # a `tiffin train` speech checkpoint through the API answers as `tiffin predict` does
    expected = json.loads(run_cli("predict", checkpoints["speech"], *recordings[:2], "--json").output)
    assert SpeechRecognition.load_from_checkpoint(checkpoints["speech"]).predict(recordings[:2]) == expected


def test_api_predict_and_evaluate_take_the_clis_decoders(artifacts, checkpoints, recordings, tmp_path):
    import tiffin
    from tests.speech_media import WORDS

    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS) + "\n")
    data = checkpoints["clips"].parent / "train.csv"
    artifact, model = tiffin.load(artifacts["speech"]), tiffin.load(checkpoints["speech"])
    for target, source in ((artifact, artifacts["speech"]), (model, checkpoints["speech"])):
        cli = json.loads(run_cli("predict", source, *recordings[:3], "--json", "--decoder", "beam", "--words", words,
                                 "--timestamps").output)
        assert target.predict(recordings[:3], decoder="beam", words=words, timestamps=True) == cli
        assert all(set(w) <= set(WORDS) for r in cli for w in [r["text"].lower().split()])
        for options in ([], ["--decoder", "beam", "--words", words]):
            expected = json.loads(run_cli("evaluate", source, data, *options).output)
            got = target.evaluate(data, **({"decoder": "beam", "words": words} if options else {}))
            assert {k: got[k] for k in ("cer", "wer")} == {k: expected[k] for k in ("cer", "wer")}
    # the artifact's own (greedy) decoder is back after a beam call
    assert artifact.predict(recordings[:1]) == json.loads(run_cli("predict", artifacts["speech"], recordings[0],
                                                                  "--json").output)
    with pytest.raises(TiffinError, match="give them with --decoder beam"):
        artifact.predict(recordings[:1], decoder="greedy", words=words)
    # tuning from Python: evaluate(tune=True) is `tiffin evaluate --tune`, export(tune_on=) records its choice
    cli = json.loads(run_cli("evaluate", checkpoints["speech"], data, "--decoder", "beam", "--words", words,
                             "--tune").output.splitlines()[0])
    tuned = model.evaluate(data, tune=True, decoder="beam", words=words)
    assert tuned["tuned"] == cli["tuned"] and tuned["grid"] == cli["grid"]
    exported = model.export(out=tmp_path / "tuned", words=words, tune_on=data, beam_width=20)
    decoder = exported.meta["decoder"]
    assert decoder["beam_width"] == 20 and {k: decoder[k] for k in ("lm_weight", "word_score")} == cli["tuned"]
    with pytest.raises(TiffinError, match="need words="):
        model.export(out=tmp_path / "none", tune_on=data)
