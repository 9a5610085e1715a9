"""`tiffin train video` end to end: run folder, learning, strategies, resume, DDP, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from tiffin.cli import app
from tiffin.spec import VideoSpec
from tiffin.train.video_data import VideoClipDataset, collate_clips, discover_folder, probe_all
from tiffin.train.video_task import VideoClassificationTask

SMALL = ["--backbone", "x3d_xs", "--no-pretrained", "--num-frames", "4", "--crop-size", "32",
         "--clip-duration", "0.8", "--batch-size", "4", "--num-workers", "0", "--no-progress", "--seed", "0"]


def tiffin(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def trained_run(motion_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    result = tiffin("train", "video", "--train-folder", motion_dataset, "--max-epochs", "2", "--out", out, *SMALL)
    assert result.exit_code == 0, result.output
    return out


def test_run_folder_is_complete_and_self_describing(trained_run):
    ckpt_dir = trained_run / "checkpoints"
    assert (ckpt_dir / "best.ckpt").is_file() and (ckpt_dir / "last.ckpt").is_file()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["labels"] == ["move_down", "move_left", "move_right", "move_up"]
    assert metrics["train_videos"] + metrics["val_videos"] == 24 and metrics["val_videos"] == 4
    assert metrics["val_acc_top5"] == 1.0  # 4 classes: top-5 covers all
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert all(e["train_loss"] > 0 and e["val_loss"] > 0 for e in metrics["epochs"])
    assert (trained_run / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = metrics["best"]
    assert best["val_acc"] == max(e["val_acc"] for e in metrics["epochs"]) == metrics["best_val_acc"]
    assert sum(map(sum, best["confusion"])) == metrics["val_videos"] and len(best["confusion"]) == 4
    # the accuracy is the confusion matrix's diagonal over the validation videos
    correct = sum(best["confusion"][i][i] for i in range(4))
    assert best["val_acc"] == pytest.approx(correct / metrics["val_videos"])
    assert (trained_run / "logs" / "version_0" / "metrics.csv").is_file()
    assert list((trained_run / "logs" / "version_0").glob("events.out.tfevents.*"))
    # weights_only: the checkpoint is plain data, and it carries what predict needs to rebuild the model
    checkpoint = torch.load(ckpt_dir / "best.ckpt", map_location="cpu", weights_only=True)
    spec = VideoSpec.from_dict(checkpoint["tiffin"]["spec"])
    assert checkpoint["tiffin"]["backbone"] == "x3d_xs"
    assert (spec.num_frames, spec.crop_size, spec.clip_duration) == (4, 32, 0.8)
    assert spec.labels == tuple(metrics["labels"])


def test_predict_from_checkpoint_json_and_bad_file(trained_run, motion_dataset, tmp_path):
    files = sorted(motion_dataset.rglob("*.webm"))[:2]
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    result = tiffin("predict", trained_run / "checkpoints" / "best.ckpt", *files, bad, "--top-k", "3",
                    "--clips", "2", "--json")
    assert result.exit_code == 1  # one file failed
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == [str(f) for f in files] + [str(bad)]
    for row in rows[:2]:
        assert len(row["labels"]) == 3
        scores = [x["score"] for x in row["labels"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    assert "error" in rows[2] and "labels" not in rows[2]
    plain = tiffin("predict", trained_run / "checkpoints" / "best.ckpt", files[0], "--top-k", "1")
    assert plain.exit_code == 0 and plain.stdout.startswith(str(files[0]))


def test_resume_continues_and_existing_run_is_not_overwritten(trained_run, motion_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    refused = tiffin("train", "video", "--train-folder", motion_dataset, "--out", run, *SMALL)
    assert_one_line_error(refused, "--resume")
    step_before = json.loads((run / "metrics.json").read_text())["global_step"]
    result = tiffin("train", "video", "--train-folder", motion_dataset, "--max-epochs", "3", "--out", run,
                    "--resume", *SMALL)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2]
    assert metrics["global_step"] > step_before
    # the first session's logs are kept; the resumed session logs beside them
    assert (run / "logs" / "version_0" / "metrics.csv").is_file() and (run / "logs" / "version_1" / "metrics.csv").is_file()
    nothing = tiffin("train", "video", "--train-folder", motion_dataset, "--out", tmp_path / "new", "--resume", *SMALL)
    assert_one_line_error(nothing, "last.ckpt")


def _loader(videos, labels, spec, train):
    ds = VideoClipDataset(videos, labels, spec, "constant_clips_per_video" if not train else "random", 1,
                          train=train, flip=False)
    return DataLoader(ds, batch_size=8, shuffle=train, collate_fn=collate_clips)


def _task_and_data(motion_dataset, strategy="no_freeze", unfreeze_epoch=1, lr=3e-3):
    videos, _ = probe_all(discover_folder(motion_dataset))
    videos = videos[::3]  # 8 videos, 2 per class
    labels = sorted({v.label for v in videos})
    spec = VideoSpec(num_frames=4, clip_duration=0.8, side_size=32, crop_size=32, labels=tuple(labels))
    pl.seed_everything(0)
    task = VideoClassificationTask("x3d_xs", spec.to_dict(), strategy=strategy, unfreeze_epoch=unfreeze_epoch,
                                   learning_rate=lr)
    return task, _loader(videos, labels, spec, False)


def _trainer(tmp_path, epochs):
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=pl.loggers.CSVLogger(tmp_path),
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1, num_sanity_val_steps=0)


def test_training_learns_a_fixed_batch(motion_dataset, tmp_path):
    task, data = _task_and_data(motion_dataset)
    trainer = _trainer(tmp_path, 30)
    trainer.fit(task, data)
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        losses = [float(r["train_loss_epoch"]) for r in csv.DictReader(f) if r.get("train_loss_epoch")]
    assert len(losses) == 30
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses


def _snapshot(task):
    head = {id(p) for p in task.net.head().parameters()}
    backbone = {n: p.detach().clone() for n, p in task.net.named_parameters() if id(p) not in head}
    buffers = {n: b.clone() for n, b in task.net.backbone.named_buffers() if "running" in n}
    return backbone, buffers, task.net.head().weight.detach().clone()


def _changed(before, task):
    backbone, buffers, head = before
    params = dict(task.net.named_parameters())
    moved = [n for n, p in backbone.items() if not torch.equal(p, params[n])]
    now = dict(task.net.backbone.named_buffers())
    drifted = [n for n, b in buffers.items() if not torch.equal(b, now[n])]
    return moved, drifted, not torch.equal(head, task.net.head().weight)


def test_freeze_trains_only_the_head_and_keeps_batchnorm_statistics(motion_dataset, tmp_path):
    task, data = _task_and_data(motion_dataset, "freeze")
    before = _snapshot(task)
    _trainer(tmp_path, 2).fit(task, data)
    moved, drifted, head_changed = _changed(before, task)
    assert moved == [] and drifted == [] and head_changed


def test_freeze_unfreeze_releases_the_backbone_at_its_epoch(motion_dataset, tmp_path):
    task, data = _task_and_data(motion_dataset, "freeze_unfreeze", unfreeze_epoch=1)
    before = _snapshot(task)
    _trainer(tmp_path / "a", 1).fit(task, data)
    moved, _, head_changed = _changed(before, task)
    assert moved == [] and head_changed
    task2, data2 = _task_and_data(motion_dataset, "freeze_unfreeze", unfreeze_epoch=1)
    before2 = _snapshot(task2)
    # two steps after unfreezing: at random init the zero-initialised last BatchNorm of each residual
    # branch blocks that branch's gradients for one step
    _trainer(tmp_path / "b", 3).fit(task2, data2)
    moved2, drifted2, _ = _changed(before2, task2)
    assert len(moved2) > 0.9 * len(before2[0]) and drifted2


def test_csv_input_with_16_mixed_on_cpu(motion_dataset, tmp_path):
    rows = ["path,label"] + [f"{p},{p.parent.name}" for p in sorted(motion_dataset.rglob("*.*")) if p.is_file()]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    result = tiffin("train", "video", "--train-csv", tmp_path / "train.csv", "--max-steps", "2",
                    "--precision", "16-mixed", "--out", out, *SMALL)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["precision"] == "16-mixed"
    # stopped inside the first epoch: the final weights are still validated and kept as best.ckpt
    assert metrics["epochs"][-1]["val_acc"] is not None and metrics["best_epoch"] == 0
    assert (out / "checkpoints" / "best.ckpt").is_file()


def test_unreadable_videos_are_skipped_and_reported_or_fatal_with_strict(motion_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(motion_dataset, data)
    (data / "move_up" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    (data / "move_left" / "empty.avi").write_bytes(b"")
    result = tiffin("train", "video", "--train-folder", data, "--max-steps", "1", "--out", tmp_path / "run", *SMALL)
    assert result.exit_code == 0, result.output
    skipped = json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_files"]
    assert sorted(Path(s["path"]).name for s in skipped) == ["corrupt.mp4", "empty.avi"]
    assert "corrupt.mp4" in result.output and "empty.avi" in result.output
    assert "2 unreadable video(s) were skipped" in result.output  # the summary at the end
    strict = tiffin("train", "video", "--train-folder", data, "--strict", "--out", tmp_path / "run2", *SMALL)
    assert_one_line_error(strict)
    assert "corrupt.mp4" in strict.output or "empty.avi" in strict.output


def test_user_mistakes_are_one_line_errors(motion_dataset, tmp_path):
    one_class = tmp_path / "one"
    shutil.copytree(motion_dataset / "move_up", one_class / "move_up")
    assert_one_line_error(tiffin("train", "video", "--train-folder", one_class, *SMALL), "at least 2")
    base = ["train", "video", "--train-folder", motion_dataset, "--out", tmp_path / "r"]
    assert_one_line_error(tiffin(*base, *SMALL, "--backbone", "resnet9000"), "resnet9000", "slowfast_r50")
    assert_one_line_error(tiffin(*base, *SMALL, "--strategy", "melt"), "--strategy melt")
    assert_one_line_error(tiffin(*base, *SMALL, "--num-frames", "3", "--backbone", "slowfast_r50"), "--num-frames 3")
    if not torch.cuda.is_available():
        assert_one_line_error(tiffin(*base, *SMALL, "--accelerator", "gpu"), "Lightning refused")
    env_home = tmp_path / "torch"
    os.environ["TORCH_HOME"] = str(env_home)
    try:
        missing = tiffin(*base, "--backbone", "x3d_s", "--num-workers", "0")
    finally:
        del os.environ["TORCH_HOME"]
    assert_one_line_error(missing, str(env_home / "hub" / "checkpoints" / "X3D_S.pyth"), "--no-pretrained")
    assert not (tmp_path / "r").exists()  # nothing written on refusal


def test_ddp_on_two_cpu_processes(motion_dataset, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "tiffin", "train", "video", "--train-folder", str(motion_dataset),
           "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp", "--strategy", "freeze_unfreeze",
           "--max-epochs", "2", "--out", str(out), *SMALL]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    # 18 training videos split over 2 processes, batch 4: 2 steps an epoch, not the 4 of one process
    assert metrics["global_step"] == 4
    assert (out / "checkpoints" / "last.ckpt").is_file()
