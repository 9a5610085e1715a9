"""Hostile inputs (security issue 27, parts 7-9): datasets that would flood the terminal or hang,
`tiffin export --force` at a folder that is not an artifact, and model folders that broke the
one-line error rule (a tiffin.json nested thousands deep, labels fewer than the model's outputs,
pickled weights).

Each test attacks through the CLI; the variants are generated here. Dataset runs go through a
subprocess so that their wall time and peak memory can be measured and a hang is a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import tiffin
from tests.speech_media import write_corpus

ROWS = 100_000  # the 100,000 rows took 47 s and 1.6 GB, printing a line each; a million reached 7.4 GB


def run_cli(args: list, timeout: float) -> tuple[int, str, float, int]:
    """(exit status, output, seconds, peak RSS in bytes) of `tiffin ARGS` in a process of its own.

    A wrapper process runs it, so RUSAGE_CHILDREN's peak is that of this one command."""
    wrapper = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)\n"
               "sys.stdout.buffer.write(r.stdout)\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "sys.exit(r.returncode)\n")
    tiffin_exe = str(Path(sys.executable).parent / "tiffin")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", wrapper, tiffin_exe, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    seconds = time.monotonic() - start
    *lines, peak_kb = done.stdout.rstrip("\n").split("\n")
    return done.returncode, "\n".join(lines) + done.stderr, seconds, int(peak_kb) * 1024


def one_error_line(output: str) -> str:
    """The output's `error:` line; the output holds no traceback."""
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


# --- 7: datasets that fail fast, small and bounded ---------------------------------------------

@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory) -> int:
    """Peak RSS of `tiffin train video` refusing a 4-row CSV: what importing torch and Lightning costs."""
    folder = tmp_path_factory.mktemp("baseline")
    (folder / "v.csv").write_text("path,label\n" + "".join(f"gone/{i}.mp4,c{i % 2}\n" for i in range(4)))
    code, output, _, peak = run_cli(["train", "video", "--train-csv", folder / "v.csv", "--backbone", "x3d_xs",
                                     "--no-pretrained", "--no-progress", "--out", folder / "run"], timeout=120)
    assert code == 2, output
    return peak


@pytest.mark.parametrize("task", ["video", "speech"])
def test_a_csv_of_missing_files_fails_fast_short_and_small(task, tmp_path, baseline_rss):
    # a FIFO first (it must be skipped, not block), then ROWS paths that do not exist
    os.mkfifo(tmp_path / ("pipe.mp4" if task == "video" else "pipe.wav"))
    if task == "video":
        header, row = "path,label\npipe.mp4,c0\n", "gone/{i}.mp4,c{c}\n"
        args = ["train", "video", "--train-csv", tmp_path / "t.csv", "--backbone", "x3d_xs", "--no-pretrained"]
    else:
        header, row = "speech_files,targets\npipe.wav,one two\n", "gone/{i}.wav,one two\n"
        args = ["train", "speech", "--train-csv", tmp_path / "t.csv", "--backbone", "tiffin/wav2vec2-tiny"]
    with open(tmp_path / "t.csv", "w") as f:
        f.write(header + "".join(row.format(i=i, c=i % 2) for i in range(ROWS)))
    code, output, seconds, peak = run_cli(args + ["--no-progress", "--out", tmp_path / "run"], timeout=120)
    error = one_error_line(output)
    assert code == 2 and "none of the first" in error and f"of {ROWS + 1}" in error and "missing" in error, error
    assert "pipe" in output and "not a regular file" in output  # the FIFO was reported, not opened
    assert len(output.splitlines()) < 40, output[:3000]
    assert seconds < 30, seconds
    # the rows' Sample objects cost some memory; a line or an error object per row kept would cost far more
    assert peak - baseline_rss < 400 << 20, (peak >> 20, baseline_rss >> 20)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_files_are_summarised_and_counted():
    from tiffin.errors import MediaError
    from tiffin.train.bad_files import KEPT, SHOWN, BadFiles

    bad = BadFiles()
    for i in range(KEPT + 500):
        bad.add(MediaError(f"v{i}.mp4", "no such file" if i % 3 else "is not a regular file (a pipe)"))
    lines = bad.lines("video")
    assert len(lines) == SHOWN + 1 and lines[0] == "v0.mp4: is not a regular file (a pipe)"
    assert lines[-1] == f"... and {KEPT + 500 - SHOWN} more bad video(s); in all 1000 missing, 500 not a regular file"
    assert len(bad) == KEPT + 500 and len(list(bad)) == KEPT  # counted, but only the first kept
    both = BadFiles()
    both += bad
    both += [MediaError("x.mp4", "invalid data")]
    assert len(both) == KEPT + 501 and both.summary()["kinds"]["unreadable"] == 1


def test_a_fifo_given_to_predict_is_refused_at_once(tmp_path):
    import threading

    os.mkfifo(tmp_path / "clip.mp4")
    os.mkfifo(tmp_path / "talk.wav")
    for model, file in (("tiffin/tiny-motion", "clip.mp4"), ("tiffin/tiny-en", "talk.wav")):
        answer = []
        worker = threading.Thread(target=lambda: answer.append(tiffin("predict", model, tmp_path / file)), daemon=True)
        worker.start()
        worker.join(60)
        if worker.is_alive():  # blocked opening the pipe: open its other end so the thread can finish
            os.close(os.open(tmp_path / file, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail(f"tiffin predict {file}: still reading a FIFO after 60 s")
        result = answer[0]
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert [line for line in result.output.splitlines() if file in line] == [
            f"{tmp_path / file}: error: is not a regular file (a pipe, device or folder); give a media file"]


# --- 8: export --force replaces only an artifact ----------------------------------------------

MODEL = "tiffin/tiny-en"  # the quickest export (an embedded model, no training)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny-en"
    result = tiffin("export", MODEL, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def snapshot(path: Path) -> dict[str, str]:
    """Every file and folder under `path` (or the file itself) with its content's hash."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


def _not_artifacts(root: Path, artifact: Path) -> dict[str, Path]:
    """Things at --out that --force must leave alone, each a variant of a user's folder."""
    variants = {}
    variants["a plain file"] = root / "notes.txt"
    variants["a plain file"].write_text("my notes")
    thesis = root / "thesis"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("chapter 1")
    variants["a folder with a thesis"] = thesis
    mixed = root / "mixed"
    shutil.copytree(artifact, mixed)
    (mixed / "thesis.txt").write_text("chapter 1")
    variants["an artifact with a thesis in it"] = mixed
    nested = root / "nested"
    shutil.copytree(artifact, nested)
    (nested / "drafts").mkdir()
    (nested / "drafts" / "model.onnx").write_text("a draft")
    variants["an artifact with a subfolder"] = nested
    named = root / "named"
    named.mkdir()
    (named / "tiffin.json").mkdir()  # an artifact's name, but a folder
    (named / "tiffin.json" / "data.txt").write_text("data")
    variants["a folder named like a file an export writes"] = named
    loose = root / "loose"
    loose.mkdir()
    (loose / "model.onnx").write_text("not from tiffin")  # an export's name, but no tiffin.json
    variants["a model file without tiffin.json"] = loose
    link = root / "link"
    link.symlink_to(thesis, target_is_directory=True)
    variants["a link to a folder"] = link
    return variants


def test_export_force_refuses_what_is_not_an_artifact(artifact, tmp_path):
    for name, out in _not_artifacts(tmp_path, artifact).items():
        before = snapshot(out)
        result = tiffin("export", MODEL, "--out", out, "--force")
        error = one_error_line(result.output)
        assert result.exit_code == 2 and f"--out {out}" in error and "nothing was removed" in error, (name, error)
        assert snapshot(out) == before, name
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("kind", ["artifact", "empty folder"])
def test_export_force_replaces_an_artifact_or_an_empty_folder(kind, artifact, tmp_path):
    out = tmp_path / "out"
    if kind == "artifact":
        shutil.copytree(artifact, out)
    else:
        out.mkdir()
    result = tiffin("export", MODEL, "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert {"model.onnx", "tiffin.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "tiffin.json").read_text())["backbone"] == MODEL


# --- 9: model folders that must fail in one line ----------------------------------------------

@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("talk")
    name, _ = write_corpus(folder, 1)[0]
    return folder / name


def _edited(artifact: Path, folder: Path, edit) -> Path:
    """A copy of `artifact` whose tiffin.json is `edit`(its dict), or the text `edit` returns."""
    shutil.copytree(artifact, folder)
    meta = json.loads((folder / "tiffin.json").read_text())
    changed = edit(meta)
    (folder / "tiffin.json").write_text(changed if isinstance(changed, str) else json.dumps(meta))
    return folder


def _fewer_tokens(meta: dict, outputs_too: bool) -> None:
    meta["vocab"] = meta["vocab"][:5]
    if outputs_too:  # the shape lies as well: caught where the logits are decoded
        meta["outputs"][0]["shape"][-1] = 5


CASES = {
    "nested 100,000 deep": (lambda m: '{"schema_version": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
                            "nested too deeply"),
    "nested objects": (lambda m: '{"a": ' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
    "20 MB of labels": (lambda m: json.dumps({**m, "pad": "x" * (20 << 20)}), "larger than any tiffin.json"),
    "fewer tokens than outputs": (lambda m: _fewer_tokens(m, False), "vocab has 5 entries but the model's output"),
    "fewer tokens, outputs lying": (lambda m: _fewer_tokens(m, True), "32 outputs but its vocabulary 5 tokens"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_tiffin_json_fails_in_one_line(case, artifact, recording, tmp_path):
    edit, expected = CASES[case]
    folder = _edited(artifact, tmp_path / "a", edit)
    result = tiffin("predict", folder, recording)
    error = one_error_line(result.output)
    assert result.exit_code == 2 and expected in error, error
    if "outputs lying" not in case:
        assert str(folder / "tiffin.json") in error


def test_fewer_labels_than_the_models_outputs_is_one_line():
    from tiffin.errors import TiffinError
    from tiffin.inference import top_labels

    with pytest.raises(TiffinError, match="10 outputs but 3 labels"):
        top_labels(__import__("numpy").zeros((2, 10)), ["a", "b", "c"], 5)


def test_pickled_weights_in_a_model_folder_are_refused_in_one_line(recording, tmp_path):
    import torch

    from tiffin.train.speech_model import embedded_dir

    folder = tmp_path / "hf"
    shutil.copytree(embedded_dir(MODEL), folder)
    (folder / "model.safetensors").unlink()

    class Hostile:
        def __reduce__(self):
            return (print, ("UNPICKLED",))  # what a real attack would make os.system

    torch.save({"w": Hostile()}, folder / "pytorch_model.bin")
    for args in (["predict", folder, recording],
                 ["train", "speech", "--train-csv", tmp_path / "none.csv", "--backbone", folder,
                  "--out", tmp_path / "r"]):
        (tmp_path / "none.csv").write_text(f"speech_files,targets\n{recording},one\n")
        result = tiffin(*args)
        error = one_error_line(result.output)
        assert result.exit_code == 2 and "pytorch_model.bin" in error and "safetensors" in error, error
        assert "UNPICKLED" not in result.output


@pytest.mark.parametrize("cut", [1, 2])
def test_a_checkpoint_listing_fewer_labels_than_its_weights_is_one_line(cut, checkpoints, videos, tmp_path):
    import torch

    checkpoint = torch.load(checkpoints["video"], weights_only=True, map_location="cpu")
    checkpoint["tiffin"]["spec"]["labels"] = checkpoint["tiffin"]["spec"]["labels"][:cut]
    torch.save(checkpoint, tmp_path / "cut.ckpt")
    for args in (["predict", tmp_path / "cut.ckpt", videos[0]],
                 ["export", tmp_path / "cut.ckpt", "--out", tmp_path / "x"]):
        result = tiffin(*args)
        error = one_error_line(result.output)
        assert result.exit_code == 2 and str(tmp_path / "cut.ckpt") in error and "do not fit" in error, error
