"""Faults and hostile files: a killed checkpoint write, a malicious pickle, an artifact reaching outside itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import killed_and_resumed, tiffin
from tests.speech_media import write_corpus
from tiffin.artifact_json import sha256

ROOT = Path(__file__).resolve().parent.parent


def test_a_checkpoint_write_killed_midway_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL at several moments of writing a 320 MB checkpoint over an existing one: the file
    at the path always loads, as the old checkpoint or the new one, never truncated."""
    from tiffin.train.checkpoints import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    outcomes = []
    for delay in (0.05, 0.3, 0.6, 1.0, 1.5):
        AtomicCheckpointIO().save_checkpoint({"generation": "old"}, path)
        writer = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, torch\n"
             "from tiffin.train.checkpoints import AtomicCheckpointIO\n"
             "big = {'generation': 'new', 'weights': torch.ones(80_000_000)}\n"
             "print('go', flush=True)\n"
             f"AtomicCheckpointIO().save_checkpoint(big, {str(path)!r})\n"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "go"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        outcomes.append(loaded["generation"])
    assert "old" in outcomes  # at least one kill landed before the new checkpoint was in place

    # and deterministically, half-way through the bytes: the writer is stopped inside the write
    AtomicCheckpointIO().save_checkpoint({"generation": "old"}, path)
    assert _killed_halfway("AtomicCheckpointIO", path) == "old"
    # the same kill against a writer that writes into its target (what this guards against) breaks the file
    broken = tmp_path.parent / f"{tmp_path.name}-direct" / "last.ckpt"
    broken.parent.mkdir()
    AtomicCheckpointIO().save_checkpoint({"generation": "old"}, broken)
    assert _killed_halfway("TorchCheckpointIO", broken) == "unreadable"
    AtomicCheckpointIO().save_checkpoint({"generation": "next"}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # partial files of killed writers are gone


def _killed_halfway(io_class: str, path: Path) -> str:
    """SIGKILL a checkpoint writer once it has written half its bytes to the file it writes to;
    what the target then holds: its generation, or "unreadable"."""
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, io, torch\n"
         "import lightning_fabric.plugins.io.torch_io as torch_io\n"
         "from pytorch_lightning.plugins import TorchCheckpointIO\n"
         "from tiffin.train.checkpoints import AtomicCheckpointIO\n"
         "def slow_save(checkpoint, target):\n"
         "    buffer = io.BytesIO(); torch.save(checkpoint, buffer); data = buffer.getvalue()\n"
         "    with open(target, 'wb') as f:\n"
         "        f.write(data[: len(data) // 2]); f.flush()\n"
         "        print('half', flush=True); time.sleep(60)\n"
         "torch_io._atomic_save = slow_save\n"
         f"{io_class}().save_checkpoint({{'generation': 'new', 'weights': torch.ones(1_000_000)}}, {str(path)!r})\n"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "half"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["generation"]
    except Exception:
        return "unreadable"


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['TIFFIN_EVIL_MARKER']}",))


def test_a_malicious_pickle_checkpoint_is_refused_without_running(tmp_path, monkeypatch, motion_dataset):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("TIFFIN_EVIL_MARKER", str(marker))
    evil = tmp_path / "evil.ckpt"
    torch.save({"tiffin": {"task": "video-classification"}, "state_dict": {}, "payload": _Evil()}, evil)
    video = next(p for p in motion_dataset.rglob("*.mp4"))
    for args in (["predict", evil, video], ["export", evil, "--out", tmp_path / "x"],
                 ["evaluate", evil, motion_dataset]):
        result = tiffin(*args)
        assert result.exit_code == 2 and "not a readable checkpoint" in result.output, result.output
        assert "Traceback" not in result.output
    assert not marker.exists()


def test_onnx_external_data_outside_the_artifact_is_refused(checkpoints, tmp_path):
    import onnx
    from onnx.external_data_helper import set_external_data

    out = tmp_path / "artifact"
    assert tiffin("export", checkpoints["speech"], "--out", out).exit_code == 0
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    model = onnx.load(str(out / "model.onnx"))
    tensor = next(t for t in model.graph.initializer if t.raw_data)
    set_external_data(tensor, location="../secret.bin", offset=0, length=len(tensor.raw_data))
    tensor.ClearField("raw_data")
    (out / "model.onnx").write_bytes(model.SerializeToString())
    meta = json.loads((out / "tiffin.json").read_text())
    meta["sha256"] = sha256(out / "model.onnx")  # an attacker can rewrite the hash too
    (out / "tiffin.json").write_text(json.dumps(meta))
    for args in (["predict", out, checkpoints["clips"] / "u000.wav"], ["check", out], ["serve", out]):
        result = tiffin(*args)
        assert result.exit_code == 2 and "points outside the artifact" in result.output, result.output


# video: tests/test_run_folder.py kills and resumes a `tiffin train video` run and a Python one
@pytest.mark.parametrize("task", ["speech"])
def test_training_killed_mid_epoch_then_resumed_ends_like_an_uninterrupted_run(task, motion_dataset, checkpoints, tmp_path):
    """SIGKILL during epoch 1 (after epoch 0's checkpoint), `--resume`: every epoch's figures
    equal those of a run that was never interrupted (same seed, data loader workers on)."""
    if task == "video":
        data = ["--train-folder", str(motion_dataset), "--backbone", "x3d_xs", "--no-pretrained", "--num-frames", "4",
                "--crop-size", "32", "--clip-duration", "0.8"]
    else:
        rows = write_corpus(tmp_path / "clips", 40)
        (tmp_path / "train.csv").write_text("speech_files,targets\n" + "\n".join(f"clips/{n},{t}" for n, t in rows))
        data = ["--train-csv", str(tmp_path / "train.csv"), "--backbone", "tiffin/wav2vec2-tiny"]
    command = [sys.executable, "-m", "tiffin", "train", task, *data, "--max-epochs", "3", "--batch-size", "4",
               "--num-workers", "2", "--seed", "3", "--no-progress"]
    subprocess.run([*command, "--out", str(tmp_path / "whole")], cwd=ROOT, check=True, capture_output=True)

    run = tmp_path / "killed"
    killed_and_resumed([*command, "--out", str(run)], [*command, "--out", str(run), "--resume"], run)

    whole, after = (json.loads((folder / "metrics.json").read_text())["epochs"] for folder in (tmp_path / "whole", run))
    assert [e["epoch"] for e in after] == [0, 1, 2]
    for a, b in zip(whole, after):
        for key in ("train_loss", "val_loss"):
            assert abs(a[key] - b[key]) < 1e-4, (key, whole, after)


def test_an_export_killed_midway_leaves_the_existing_artifact_whole(checkpoints, tmp_path):
    """SIGKILL `tiffin export --force` over an existing artifact at several moments: the folder is
    always a complete artifact (old or new) that `tiffin check` passes; the next export clears
    what the killed ones left beside it."""
    out = tmp_path / "artifact"
    assert tiffin("export", checkpoints["video"], "--format", "onnx", "--out", out).exit_code == 0
    command = [sys.executable, "-m", "tiffin", "export", str(checkpoints["video"]), "--format", "onnx", "--out", str(out),
               "--force"]
    killed_while_writing = 0
    for delay in (0.0, 0.05, 0.2, 0.5, 1.0, 2.0):  # after the export's partial folder appears
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        partial = tmp_path / f".artifact.partial-{process.pid}"
        while not partial.exists() and process.poll() is None:
            time.sleep(0.01)
        time.sleep(delay)
        killed_while_writing += process.poll() is None and partial.exists()
        process.send_signal(signal.SIGKILL)
        process.wait()
        check = tiffin("check", out)
        assert check.exit_code == 0, (delay, check.output)
        assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["artifact"]
    assert killed_while_writing >= 3
    assert tiffin("export", checkpoints["video"], "--format", "onnx", "--out", out, "--force").exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # partial folders of the killed exports are gone


def _without(meta: dict, path: str) -> dict:
    """A copy of `meta` with the field at dotted `path` removed."""
    meta = json.loads(json.dumps(meta))
    *parents, last = path.split(".")
    node = meta
    for key in parents:
        node = node[key]
    del node[last]
    return meta


@pytest.mark.parametrize("task", ["video", "speech"])
def test_a_malformed_tiffin_json_gets_one_line_naming_the_field(artifacts, videos, recordings, task, tmp_path):
    """Each required field missing, and hostile values, through `tiffin predict`: exit 2, one
    line that names the field, never a traceback."""
    import shutil

    meta = json.loads((artifacts[task] / "tiffin.json").read_text())
    media = (videos if task == "video" else recordings)[0]
    classes = "labels" if task == "video" else "vocab"
    pre = ["num_frames", "clip_duration", "side_size", "crop_size"] if task == "video" else [
        "sample_rate", "conv_stride", "conv_kernel"]
    edits = {field: _without(meta, field) for field in
             ["backbone", "format", "precision", "model_file", "inputs", "outputs", "sha256", classes]
             + [f"preprocessing.{k}" for k in pre]}
    hostile = {"inputs": [], classes: None, "preprocessing": [1, 2], "outputs": [{"name": 3}], "sha256": 42,
               "model_file": "../../etc/passwd", "backbone": ["x"]}
    for field, value in hostile.items():
        edits[f"{field} = {value!r}"] = {**meta, field: value}
    big = "crop_size" if task == "video" else "sample_rate"
    edits[f"preprocessing.{big} = 1e9"] = {**meta, "preprocessing": {**meta["preprocessing"], big: 10**9}}
    edits["a list"] = [meta]
    for name, edited in edits.items():
        artifact = tmp_path / "a"
        shutil.rmtree(artifact, ignore_errors=True)
        shutil.copytree(artifacts[task], artifact)
        (artifact / "tiffin.json").write_text(json.dumps(edited))
        result = tiffin("predict", artifact, media)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, (name, result.output)
        field = name.split(" = ")[0].split(".")[-1]
        assert name == "a list" or field in lines[0], (name, lines[0])
