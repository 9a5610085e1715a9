"""One training path: `tiffin train video --out D` and `tiffin.Trainer(default_root_dir=D)` from
Python keep the same run folder, and both resume exactly after a SIGKILL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, killed_and_resumed

SEED = 3

# the Python a Flash user writes, with the CLI's defaults spelled out (val_split 0.2, seed, clip)
PYTHON_RUN = """
import sys, pytorch_lightning as pl
from tiffin import Trainer
from tiffin.video import VideoClassificationData, VideoClassifier
data, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
dm = VideoClassificationData.from_folders(train_folder=data, val_split=0.2, clip_duration=0.8, batch_size=4,
                                          num_workers=2, seed={seed})
pl.seed_everything({seed}, workers=True, verbose=False)
model = VideoClassifier(backbone="x3d_xs", labels=dm.labels, pretrained=False, num_frames=4, crop_size=32,
                        clip_duration=0.8)
trainer = Trainer(max_epochs=3, enable_progress_bar=False, default_root_dir=out)
trainer.finetune(model, datamodule=dm, ckpt_path="last" if resume else None)
""".format(seed=SEED)


def cli(data: Path, out: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "tiffin", "train", "video", "--train-folder", str(data), "--backbone", "x3d_xs",
            "--no-pretrained", "--num-frames", "4", "--crop-size", "32", "--clip-duration", "0.8", "--max-epochs", "3",
            "--batch-size", "4", "--num-workers", "2", "--seed", str(SEED), "--no-progress", "--out", str(out),
            *(["--resume"] if resume else [])]


def python(data: Path, out: Path, resume: bool) -> list[str]:
    return [sys.executable, "-c", PYTHON_RUN, str(data), str(out), "resume" if resume else "new"]


def files(run: Path) -> set[str]:
    """The run folder's files, a TensorBoard event file's host and time left out of its name."""
    return {re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents", str(p.relative_to(run)))
            for p in run.rglob("*") if p.is_file()}


def test_cli_and_python_keep_the_same_run_folder_and_both_resume_exactly(motion_dataset, tmp_path):
    whole = tmp_path / "cli-whole"
    subprocess.run(cli(motion_dataset, whole, False), cwd=ROOT, check=True, capture_output=True)
    runs = {"cli": tmp_path / "cli-killed", "python": tmp_path / "python-killed"}
    for name, command in (("cli", cli), ("python", python)):
        killed_and_resumed(command(motion_dataset, runs[name], False), command(motion_dataset, runs[name], True),
                           runs[name])

    expected = json.loads((whole / "metrics.json").read_text())
    assert {"checkpoints/best.ckpt", "checkpoints/last.ckpt", "metrics.json", "confusion_matrix.png",
            "logs/version_0/metrics.csv", "logs/version_0/hparams.yaml"} <= files(whole)
    for name, run in runs.items():
        # a resumed session logs beside the first one: version_1 besides version_0
        assert files(run) == files(whole) | {f.replace("version_0", "version_1") for f in files(whole)
                                             if f.startswith("logs/")}, name
        metrics = json.loads((run / "metrics.json").read_text())
        assert set(metrics) == set(expected), (name, set(metrics) ^ set(expected))
        assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2]
        for a, b in zip(expected["epochs"], metrics["epochs"]):  # same data, seed and model: the same run
            for key in ("train_loss", "val_loss", "val_acc"):
                assert abs(a[key] - b[key]) < 1e-4, (name, key, expected["epochs"], metrics["epochs"])
        assert metrics["labels"] == expected["labels"] and metrics["val_videos"] == expected["val_videos"]
        assert metrics["best"]["confusion"] and sum(map(sum, metrics["best"]["confusion"])) == metrics["val_videos"]


def test_python_refuses_to_start_over_a_run_and_needs_one_to_resume(motion_dataset, tmp_path):
    from tiffin import Trainer
    from tiffin.errors import TiffinError
    from tiffin.video import VideoClassificationData, VideoClassifier

    dm = VideoClassificationData.from_folders(train_folder=motion_dataset, val_split=0.2, clip_duration=0.8,
                                              batch_size=4)
    model = VideoClassifier(backbone="x3d_xs", labels=dm.labels, pretrained=False, num_frames=4, crop_size=32)
    with pytest.raises(TiffinError, match="last.ckpt does not exist"):
        Trainer(max_epochs=1, enable_progress_bar=False, default_root_dir=tmp_path / "new").finetune(
            model, datamodule=dm, ckpt_path="last")
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints" / "last.ckpt").write_bytes(b"a run is here")
    with pytest.raises(TiffinError, match="already holds a run; pass ckpt_path='last'"):
        Trainer(max_epochs=1, enable_progress_bar=False, default_root_dir=tmp_path / "old").finetune(model, datamodule=dm)
    assert (tmp_path / "old" / "checkpoints" / "last.ckpt").read_bytes() == b"a run is here"


def test_weights_for_other_classes_are_refused_before_they_load(motion_dataset):
    """A resume with other data (another class list, or another alphabet) is one line, not a
    model silently trained on misnamed classes."""
    from tiffin.errors import TiffinError
    from tiffin.speech import SpeechRecognition
    from tiffin.video import VideoClassifier

    model = VideoClassifier(backbone="x3d_xs", labels=["a", "b"], pretrained=False, num_frames=4, crop_size=32)
    model.on_load_checkpoint({"tiffin": {"spec": {"labels": ["a", "b"]}}})  # the same classes load
    with pytest.raises(TiffinError, match=r"other classes \(3: \['a', 'b', 'c'\]\)"):
        model.on_load_checkpoint({"tiffin": {"spec": {"labels": ["a", "b", "c"]}}})
    speech = SpeechRecognition(backbone="tiffin/wav2vec2-tiny", pretrained=False)
    with pytest.raises(TiffinError, match="other vocabulary tokens"):
        speech.on_load_checkpoint({"tiffin": {"spec": {"vocab": ["<pad>", "a"]}}})
