"""Video corpora with their own splits, as published: UCF101 (ucfTrainTestlist/), HMDB51
(*_test_split<N>.txt), Something-Something v2 (labels/train/validation JSON + <id>.webm),
Kinetics annotation CSVs, read and trained on with their lists."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import tiffin, write_frames
from tiffin.errors import TiffinError
from tiffin.train.video_layouts import read_split_layout

SMALL = ("--backbone", "x3d_xs", "--no-pretrained", "--num-frames", "4", "--crop-size", "32", "--clip-duration", "0.8",
         "--max-steps", "1", "--num-workers", "0", "--no-progress")


def ucf101(motion_dataset, root):
    """UCF-101/<class>/<video> and ucfTrainTestlist/ beside it: split 1 tests the last 2 videos of a class."""
    shutil.copytree(motion_dataset, root / "UCF-101")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    classes = sorted(p.name for p in (root / "UCF-101").iterdir())
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    train, test = [], []
    for i, c in enumerate(classes, 1):
        files = sorted(p.name for p in (root / "UCF-101" / c).iterdir())
        train += [f"{c}/{f} {i}" for f in files[:-2]]
        test += [f"{c}/{f}" for f in files[-2:]]
    train.append(f"{classes[0]}/v_never_downloaded.avi 1")
    (lists / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")  # the release's CRLF lines
    (lists / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")
    return root, len(classes)


def test_ucf101_split_files_give_train_and_test(motion_dataset, tmp_path):
    root, n_classes = ucf101(motion_dataset, tmp_path / "ucf")
    found = read_split_layout(root / "UCF-101", 1)
    assert found.layout == "UCF101" and (len(found.train), len(found.test)) == (4 * n_classes, 2 * n_classes)
    assert len(found.missing) == 1 and found.missing[0].startswith(f"trainlist01.txt line {4 * n_classes + 1}: ")
    assert found.missing[0].endswith("/v_never_downloaded.avi")
    assert {s.path.parent.name for s in found.test} == {s.label for s in found.test}
    with pytest.raises(TiffinError, match="--split 1, 2 or 3"):
        read_split_layout(root / "UCF-101", 2)
    out = tmp_path / "run"
    result = tiffin("train", "video", "--train-folder", root / "UCF-101", *SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    assert "UCF101 layout, split 1" in result.output and "validating on the layout's own split" in result.output
    assert "1 video(s) its split files list are not in the folder" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["train_videos"], metrics["val_videos"]) == (4 * n_classes, 2 * n_classes)
    assert metrics["listed_missing"] == 1


def test_hmdb51_flags_choose_the_split(motion_dataset, tmp_path):
    root = tmp_path / "hmdb51"
    shutil.copytree(motion_dataset, root)
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir()
    expected = {"train": 0, "test": 0}
    for c in sorted(p.name for p in root.iterdir() if p.name != splits.name):
        files = sorted(p.name for p in (root / c).iterdir())
        flags = ["1", "1", "1", "2", "2", "0"]  # train, test, neither
        (splits / f"{c}_test_split1.txt").write_text("".join(f"{f} {flag} \n" for f, flag in zip(files, flags)))
        expected["train"] += flags[: len(files)].count("1")
        expected["test"] += flags[: len(files)].count("2")
    found = read_split_layout(root, 1)
    assert found.layout == "HMDB51" and (len(found.train), len(found.test)) == (expected["train"], expected["test"])
    assert not found.missing and not {s.path for s in found.train} & {s.path for s in found.test}
    # a plain class folder is no split layout
    assert read_split_layout(motion_dataset, 1) is None


def test_kinetics_annotations_find_downloaded_clips_and_count_the_missing(motion_dataset, tmp_path):
    from tiffin.train.video_layouts import is_kinetics_csv, read_kinetics

    root = tmp_path / "kinetics400"
    rows = ["label,youtube_id,time_start,time_end,split"]
    n = 0
    for folder in sorted(p for p in motion_dataset.iterdir()):
        label = folder.name.replace("_", " ")  # Kinetics labels have spaces; downloaders write folders with _
        for i, video in enumerate(sorted(folder.iterdir())):
            youtube_id, start = f"yt{folder.name[-2:]}{i:02d}x", 10 * i
            rows.append(f"{label},{youtube_id},{start},{start + 10},train")
            if i < 5:  # the last clip of each class was never downloaded
                (root / "train" / folder.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(video, root / "train" / folder.name / f"{youtube_id}_{start:06d}_{start + 10:06d}{video.suffix}")
                n += 1
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    assert is_kinetics_csv(root / "train.csv") and not is_kinetics_csv(motion_dataset / "nothing.csv")
    found = read_kinetics(root / "train.csv")
    assert len(found.train) == n and len(found.missing) == len(rows) - 1 - n
    assert all(s.path.parent.name == s.label.replace(" ", "_") for s in found.train)
    out = tmp_path / "run"
    result = tiffin("train", "video", "--train-csv", root / "train.csv", *SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"Kinetics annotations, {n} of {len(rows) - 1} clips found" in result.output
    assert f"{len(found.missing)} annotated clip(s) were not downloaded" in result.output
    assert json.loads((out / "metrics.json").read_text())["listed_missing"] == len(found.missing)
    elsewhere = tiffin("train", "video", "--train-csv", root / "train.csv", "--video-root", tmp_path / "nowhere",
                       *SMALL, "--out", tmp_path / "run2")
    assert elsewhere.exit_code == 2 and "--video-root" in elsewhere.output


def test_the_python_api_reads_the_same_layouts(motion_dataset, tmp_path):
    from tiffin.video import VideoClassificationData

    root, n_classes = ucf101(motion_dataset, tmp_path / "ucf")
    dm = VideoClassificationData.from_folders(train_folder=root / "UCF-101")
    assert (len(dm.videos["train"]), len(dm.videos["val"])) == (4 * n_classes, 2 * n_classes)
    assert dm.labels == sorted(p.name for p in motion_dataset.iterdir())


def ssv2(motion_dataset, root):
    """Something-Something v2 as released: JSON lists beside a folder of VP9 <id>.webm files."""
    import av
    import numpy as np

    videos = root / "20bn-something-something-v2"
    videos.mkdir(parents=True)
    classes = sorted(p.name for p in motion_dataset.iterdir())
    templates = {c: f"Moving [something] {c.replace('_', ' ')}" for c in classes}
    lists = {"train": [], "validation": []}
    video_id = 100
    for c in classes:
        for i, file in enumerate(sorted((motion_dataset / c).iterdir())):
            with av.open(str(file)) as container:
                frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
            write_frames(videos / f"{video_id}.webm", frames, codec="libvpx-vp9")
            words = c.replace("_", " ")
            lists["train" if i < 4 else "validation"].append(
                {"id": str(video_id), "label": f"moving a pen {words}", "template": templates[c], "placeholders": ["a pen"]})
            video_id += 1
    lists["train"].append({"id": "999999", "label": "x", "template": templates[classes[0]], "placeholders": ["x"]})
    (root / "something-something-v2-labels.json").write_text(
        json.dumps({t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(templates.values())}))
    for part, entries in lists.items():
        (root / f"something-something-v2-{part}.json").write_text(json.dumps(entries))
    return root, len(classes)


def test_something_something_v2_reads_its_json_lists(motion_dataset, tmp_path):
    root, n_classes = ssv2(motion_dataset, tmp_path / "ssv2")
    found = read_split_layout(root, 1)
    assert found.layout == "Something-Something v2" and not found.numbered
    assert (len(found.train), len(found.test)) == (4 * n_classes, 2 * n_classes)
    assert found.missing == [f"something-something-v2-train.json entry {4 * n_classes + 1}: 999999.webm"]
    assert found.train[0].label.startswith("Moving something ") and found.train[0].path.suffix == ".webm"
    out = tmp_path / "run"
    result = tiffin("train", "video", "--train-folder", root, *SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"{4 * n_classes} training and {2 * n_classes} validation videos" in result.output
    assert "Something-Something v2's validation list" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["train_videos"], metrics["val_videos"]) == (4 * n_classes, 2 * n_classes)
