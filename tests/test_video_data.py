"""train.video_data: folder and CSV discovery, checks, split, clip datasets."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tiffin.errors import TiffinError
from tiffin.spec import VideoSpec
from tiffin.train.video_data import (
    VideoClipDataset,
    check_classes,
    collate_clips,
    discover_folder,
    probe_all,
    read_csv,
    stratified_split,
)

SPEC = VideoSpec(num_frames=4, clip_duration=0.5, side_size=40, crop_size=32, labels=())


def test_folder_discovery_ignores_hidden_and_non_video_files(motion_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(motion_dataset, root)
    (root / "move_up" / "notes.txt").write_text("not a video")
    (root / "move_up" / ".hidden.mp4").write_bytes(b"")
    (root / ".cache").mkdir()
    nested = root / "move_up" / "batch2"
    nested.mkdir()
    shutil.copy(next((root / "move_up").glob("*.mp4")), nested / "extra.MP4")
    samples = discover_folder(root)
    assert {s.label for s in samples} == {"move_left", "move_right", "move_up", "move_down"}
    assert len(samples) == 4 * 6 + 1
    assert all(s.path.suffix.lower() in {".mp4", ".avi", ".webm", ".mkv"} for s in samples)


def test_symlink_loop_in_a_class_folder_does_not_hang(motion_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(motion_dataset, root)
    (root / "move_up" / "loop").symlink_to(root / "move_up", target_is_directory=True)
    assert len(discover_folder(root)) == 24


def test_empty_class_folder_and_single_class_are_errors(tmp_path, motion_dataset):
    root = tmp_path / "data"
    shutil.copytree(motion_dataset, root)
    (root / "jumping").mkdir()
    with pytest.raises(TiffinError, match="'jumping' has no videos"):
        discover_folder(root)
    one = tmp_path / "one"
    shutil.copytree(motion_dataset / "move_up", one / "move_up")
    with pytest.raises(TiffinError, match="at least 2"):
        check_classes(discover_folder(one), "--train-folder")
    with pytest.raises(TiffinError, match="no such folder"):
        discover_folder(tmp_path / "nope")


def test_csv_paths_are_relative_to_the_csv_and_quirks_are_tolerated(motion_dataset, tmp_path):
    videos = sorted(motion_dataset.rglob("*.mp4"))[:3]
    sub = tmp_path / "lists"
    sub.mkdir()
    (sub / "a.mp4").write_bytes(videos[0].read_bytes())
    text = "\ufeff,Path,Label,extra\n0,a.mp4,left,x\n1,{},up,y\n\n".format(videos[1])
    (sub / "train.csv").write_text(text, encoding="utf-8")
    samples = read_csv(sub / "train.csv")
    assert [s.path for s in samples] == [sub / "a.mp4", videos[1]]
    assert [s.label for s in samples] == ["left", "up"]
    (sub / "train.tsv").write_text("path\tlabel\na.mp4\tmoving left\n")
    assert read_csv(sub / "train.tsv")[0].label == "moving left"
    (sub / "bad.csv").write_text("file_name,category\na.mp4,left\n")
    with pytest.raises(TiffinError, match="'path' and 'label'"):
        read_csv(sub / "bad.csv")


def test_probe_all_reports_bad_files_and_keeps_the_rest(motion_dataset, tmp_path):
    samples = discover_folder(motion_dataset)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    from tiffin.train.video_data import Sample

    videos, bad = probe_all(samples + [Sample(broken, "move_up")])
    assert [v.path for v in videos] == [s.path for s in samples]
    assert [b.path for b in bad] == [str(broken)]
    with pytest.raises(TiffinError, match="broken.mp4"):
        probe_all([Sample(broken, "x")], strict=True)


def test_duplicate_rows_are_dropped_and_conflicting_labels_refused(motion_dataset):
    from tiffin.train.video_data import Sample, drop_duplicates

    samples = discover_folder(motion_dataset)
    same = Sample(samples[0].path.parent / ".." / samples[0].path.parent.name / samples[0].path.name, samples[0].label)
    unique, dropped = drop_duplicates(samples + [same], "--train-csv")
    assert unique == samples and dropped == 1
    with pytest.raises(TiffinError, match="labelled both"):
        drop_duplicates(samples + [Sample(samples[0].path, "other")], "--train-csv")


def test_stratified_split_is_seeded_disjoint_and_covers_every_class(motion_dataset):
    videos, _ = probe_all(discover_folder(motion_dataset))
    train, val = stratified_split(videos, 0.34, seed=3)
    again_train, again_val = stratified_split(videos, 0.34, seed=3)
    assert [v.path for v in val] == [v.path for v in again_val]
    assert not {v.path for v in train} & {v.path for v in val}
    assert len(train) + len(val) == len(videos)
    assert {v.label for v in val} == {v.label for v in videos}
    assert all(sum(v.label == c for v in val) == 2 for c in {v.label for v in videos})


def test_clip_datasets_shapes_samplers_and_augmentation(motion_dataset):
    videos, _ = probe_all(discover_folder(motion_dataset))
    labels = sorted({v.label for v in videos})
    spec = VideoSpec(**{**SPEC.to_dict(), "labels": labels})
    train = VideoClipDataset(videos, labels, spec, "random", train=True)
    item = train[0]
    assert item["video"].shape == (4, 32, 32, 3) and item["video"].dtype == torch.uint8
    assert labels[item["label"]] == videos[0].label
    uniform = VideoClipDataset(videos, labels, spec, "uniform")
    assert len(uniform) == sum(max(1, int(v.duration // 0.5)) for v in videos)
    constant = VideoClipDataset(videos, labels, spec, "constant_clips_per_video", clips_per_video=3)
    assert len(constant) == 3 * len(videos)
    val = VideoClipDataset(videos, labels, spec, "constant_clips_per_video", 1)
    np.testing.assert_array_equal(val[5]["video"], val[5]["video"])  # eval clips are deterministic
    batch = collate_clips([val[0], None, val[1]])
    assert batch["video"].shape == (2, 4, 32, 32, 3) and batch["label"].tolist() == [val[0]["label"], val[1]["label"]]
    assert collate_clips([None]) is None


def test_unreadable_video_at_load_time_is_skipped_unless_strict(motion_dataset, tmp_path):
    videos, _ = probe_all(discover_folder(motion_dataset))
    victim = tmp_path / "victim.mp4"
    victim.write_bytes(videos[0].path.read_bytes())
    from tiffin.train.video_data import Video

    ds = VideoClipDataset([Video(victim, videos[0].label, videos[0].duration)], [videos[0].label], SPEC)
    victim.write_bytes(b"gone bad after probing")
    assert ds[0] is None
    strict = VideoClipDataset([Video(victim, videos[0].label, 1.0)], [videos[0].label], SPEC, strict=True)
    with pytest.raises(TiffinError, match="victim.mp4"):
        strict[0]
