"""Segments (a CSV row's start/end, `tiffin predict --start/--end`) and media cut short (the
usual wart of scraped corpora): clips come from the span asked for, or from the readable part
of a truncated file, which is reported by path with both spans; no clip fitting is an error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import frame_index, numbered_frames, tiffin, write_frames
from tiffin.errors import TiffinError
from tiffin.spec import VideoSpec
from tiffin.train.video_data import VideoClipDataset
from tiffin.train.video_files import probe_all, read_csv

SPEC = VideoSpec(num_frames=4, clip_duration=0.5, side_size=48, crop_size=48, labels=("a", "b"))
SMALL = ("--backbone", "x3d_xs", "--no-pretrained", "--num-frames", "4", "--crop-size", "32", "--clip-duration", "0.8",
         "--max-steps", "1", "--num-workers", "0", "--no-progress")


def cut(path, fraction):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def cut_at_frame(path, frame: int):
    """Cut a video file where its `frame`-th packet starts, as a download that stopped there."""
    import av

    with av.open(str(path)) as container:
        position = [p.pos for p in container.demux(video=0) if p.size][frame]
    path.write_bytes(path.read_bytes()[:position])
    return path


def test_csv_segments_draw_clips_from_their_span(tmp_path):
    write_frames(tmp_path / "long.mp4", numbered_frames(30), gop=5)  # 3 s; frame i is grey i*8
    (tmp_path / "segments.csv").write_text("path,label,start,end\nlong.mp4,a,0,1\nlong.mp4,b,2.0,3.0\n"
                                           "long.mp4,b,2.5,\n")
    samples = read_csv(tmp_path / "segments.csv")
    assert [(s.label, s.start, s.end) for s in samples] == [("a", 0.0, 1.0), ("b", 2.0, 3.0), ("b", 2.5, None)]
    videos, bad = probe_all(samples)
    assert not bad and [(v.start, round(v.duration, 3)) for v in videos] == [(0.0, 1.0), (2.0, 1.0), (2.5, 0.5)]
    for sampler in ("random", "uniform", "constant_clips_per_video"):
        data = VideoClipDataset(videos, ["a", "b"], SPEC, sampler, clips_per_video=2, train=sampler == "random")
        for i, (_, label, *_rest) in enumerate(data.items):
            frames = data[(i, 3)]["video"].numpy()
            shown = {frame_index(f) for f in frames}
            span = (0, 10) if label == 0 else (20, 30)
            assert all(span[0] <= k < span[1] for k in shown), (sampler, i, shown)
    (tmp_path / "bad.csv").write_text("path,label,start,end\nlong.mp4,a,2,1\n")
    with pytest.raises(TiffinError, match="line 2: its segment ends"):
        read_csv(tmp_path / "bad.csv")
    (tmp_path / "late.csv").write_text("path,label,start\nlong.mp4,a,7\n")
    _, bad = probe_all(read_csv(tmp_path / "late.csv"))
    assert [e.reason for e in bad] == ["has no video from 7 s (it lasts 3.00 s)"]


def test_predict_start_end_classifies_that_span(tmp_path):
    from tiffin.inference import video_clips

    write_frames(tmp_path / "long.mp4", numbered_frames(30), gop=5)
    clips = video_clips(tmp_path / "long.mp4", SPEC, 3, span=(1.0, 2.0))
    assert {frame_index(f) for clip in clips for f in clip} <= set(range(10, 20))
    answer = json.loads(tiffin("predict", "tiffin/tiny-motion", tmp_path / "long.mp4", "--start", "1", "--end", "2",
                               "--json").output)[0]
    assert (answer["start"], answer["end"]) == (1.0, 2.0) and answer["labels"]
    refused = tiffin("predict", "tiffin/tiny-motion", tmp_path / "long.mp4", "--start", "2", "--end", "1")
    assert refused.exit_code == 2 and "--end 1 is not after --start 2" in refused.output


def test_truncated_videos_train_on_their_readable_part_or_are_skipped(motion_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(motion_dataset, root)
    label = sorted(p.name for p in root.iterdir())[0]
    ramp = np.stack([np.full((60, 80, 3), (i * 3) % 255, np.uint8) for i in range(80)])
    long_cut = cut_at_frame(write_frames(root / label / "long_cut.mkv", ramp), 40)  # 4 s of 8
    stub = cut_at_frame(write_frames(root / label / "stub.mkv", ramp), 4)  # 0.4 s of 8
    from tiffin.train.video_files import Sample
    from tiffin.video_io import probe

    info = probe(long_cut)
    assert info.declared == pytest.approx(8.0) and info.duration == pytest.approx(4.0, abs=0.15)
    videos, bad = probe_all([Sample(long_cut, label), Sample(stub, label)], clip_duration=0.8)
    assert [v.path for v in videos] == [long_cut] and videos[0].declared == pytest.approx(8.0)
    assert len(bad) == 1 and bad[0].path == str(stub) and "too little for one 0.8 s clip" in bad[0].reason
    out = tmp_path / "run"
    result = tiffin("train", "video", "--train-folder", root, *SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    assert "long_cut.mkv: truncated: only" in result.output and "1 truncated (their readable part used)" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["path"] for c in metrics["truncated_files"]] == [str(long_cut)]
    assert metrics["truncated_files"][0]["declared_s"] == 8.0
    assert str(stub) in [s["path"] for s in metrics["skipped_files"]]


def test_truncated_recordings_are_left_out_of_training_and_flagged_in_predict(tmp_path):
    from tests.speech_media import utterance
    from tiffin.ctc import Vocabulary
    from tiffin.train.speech_files import Row, check_rows

    sf.write(tmp_path / "whole.wav", utterance(["red", "cat", "go"]), 16000)
    sf.write(tmp_path / "cut.flac", utterance(["red", "cat", "go", "up", "two"]), 16000)
    cut(tmp_path / "cut.flac", 0.5)
    rows = [Row(tmp_path / "whole.wav", "red cat go", "a"), Row(tmp_path / "cut.flac", "red cat go up two", "b")]
    good, report = check_rows(rows, Vocabulary(), 16000)
    assert [u.path.name for u in good] == ["whole.wav"]
    assert report.bad[0].reason.startswith("truncated: only") and "the transcript is of the whole" in report.bad[0].reason
    answers = json.loads(tiffin("predict", "tiffin/tiny-en", tmp_path / "whole.wav", tmp_path / "cut.flac",
                                "--json").output)
    assert "warnings" not in answers[0]
    assert answers[1]["warnings"][0].startswith("truncated: only") and answers[1]["text"] is not None
