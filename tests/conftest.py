"""Shared fixtures: media generated into temporary folders, never checked in."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Offline by construction: no test may wait on the internet. Downloads are off (tiffin's and the Hub
# client's own switch, set before anything imports huggingface_hub), and the zoo mirror and Hub
# endpoint point at a closed loopback port; tests/test_weights.py turns them on against its own
# loopback servers.
os.environ["TIFFIN_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TIFFIN_WEIGHTS_MIRROR"] = "http://127.0.0.1:9"
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
# and the weight caches are the session's own: a developer's ~/.cache neither helps nor changes a result
_CACHES = tempfile.mkdtemp(prefix="tiffin-test-caches-")
os.environ["TORCH_HOME"] = os.path.join(_CACHES, "torch")
os.environ["HF_HOME"] = os.path.join(_CACHES, "hf")
os.environ.pop("HF_HUB_CACHE", None)

pytest.register_assert_rewrite("tests.helpers")  # its asserts explain themselves as a test module's do

from tests.helpers import tiffin  # noqa: E402
from tests.speech_media import write_corpus  # noqa: E402
from tiffin.train.synthetic import make_motion_dataset  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def config_dir(tmp_path_factory) -> Path:
    """A config folder of the test session's own (its signing key, its trusted keys), never ~/.config."""
    import os

    folder = tmp_path_factory.mktemp("config")
    os.environ["TIFFIN_CONFIG_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def motion_dataset(tmp_path_factory) -> Path:
    """A small 4-class Kinetics-layout folder in mp4/avi/webm/mkv (6 videos a class)."""
    root = tmp_path_factory.mktemp("motion")
    make_motion_dataset(root, per_class=6, seed=1, size=(80, 60))
    return root


@pytest.fixture(scope="session")
def checkpoints(motion_dataset, tmp_path_factory) -> dict[str, Path]:
    """Two-step training runs of both tasks (tiny x3d_xs, tiny wav2vec2) and the speech clips they used."""
    root = tmp_path_factory.mktemp("checkpoints")
    video = tiffin("train", "video", "--train-folder", motion_dataset, "--backbone", "x3d_xs", "--no-pretrained",
                   "--num-frames", "4", "--crop-size", "32", "--clip-duration", "0.8", "--max-steps", "2",
                   "--num-workers", "0", "--no-progress", "--out", root / "video")
    assert video.exit_code == 0, video.output
    rows = write_corpus(root / "clips", 8)
    (root / "train.csv").write_text("speech_files,targets\n" + "\n".join(f"clips/{n},{t}" for n, t in rows))
    speech = tiffin("train", "speech", "--train-csv", root / "train.csv", "--backbone", "tiffin/wav2vec2-tiny",
                    "--max-steps", "2", "--num-workers", "0", "--no-progress", "--out", root / "speech")
    assert speech.exit_code == 0, speech.output
    return {"video": root / "video" / "checkpoints" / "best.ckpt", "speech": root / "speech" / "checkpoints" / "best.ckpt",
            "clips": root / "clips"}


@pytest.fixture(scope="session")
def artifacts(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """fp32 ONNX artifacts of both checkpoints (what the services serve)."""
    root = tmp_path_factory.mktemp("artifacts")
    for task in ("video", "speech"):
        result = tiffin("export", checkpoints[task], "--format", "onnx", "--out", root / task)
        assert result.exit_code == 0, result.output
    return {"video": root / "video", "speech": root / "speech"}


@pytest.fixture(scope="session")
def videos(motion_dataset) -> list[Path]:
    """Eight videos of the motion dataset, in every container it has."""
    return sorted(p for p in motion_dataset.rglob("*") if p.is_file())[::3]


@pytest.fixture(scope="session")
def recordings(checkpoints) -> list[Path]:
    """The speech checkpoint's training clips."""
    return sorted(checkpoints["clips"].iterdir())


@pytest.fixture(scope="session")
def media_corpus(motion_dataset, checkpoints, tmp_path_factory) -> list:
    """(case, file) for every case of tests/media_corpus.py, written from good test media."""
    from tests.media_corpus import write_corpus

    video = next(p for p in sorted(motion_dataset.rglob("*.mp4")))
    return write_corpus(tmp_path_factory.mktemp("corpus"), video, sorted(checkpoints["clips"].iterdir())[0])


@pytest.fixture(scope="session")
def corpus_predictions(artifacts, media_corpus) -> dict[Path, dict]:
    """`tiffin predict ARTIFACT FILES --json` over the corpus, per file (its exit status under None)."""
    import json

    answers: dict = {None: {}}
    for task, field in (("video", "video"), ("speech", "audio")):
        files = [path for case, path in media_corpus if case.field == field]
        result = tiffin("predict", artifacts[task], *files, "--json", "--top-k", "2")
        answers[None][task] = (result.exit_code, result.output)
        answers.update({Path(entry["file"]): entry for entry in json.loads(result.stdout)})
    return answers

