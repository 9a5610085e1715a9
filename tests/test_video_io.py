"""tiffin.video_io: probing, frame-accurate clip sampling, resizing, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import frame_index, numbered_frames, write_frames
from tiffin.errors import MediaError
from tiffin.video_io import (
    center_crop,
    consecutive_starts,
    decode_clip,
    evenly_spaced_starts,
    probe,
    sample_times,
)

CONTAINERS = [(".mp4", "libx264", "yuv420p"), (".avi", "mpeg4", "yuv420p"), (".webm", "libvpx-vp9", "yuv420p"),
              (".mkv", "libx264", "yuv420p"), (".mov", "libx264", "yuv420p"), (".mkv", "ffv1", "gray"),
              (".avi", "mjpeg", "yuvj420p"), (".ts", "libx264", "yuv420p"), (".mp4", "libx264", "yuv420p10le"),
              (".mp4", "libx265", "yuv420p"), (".webm", "libvpx", "yuv420p"), (".mov", "prores_ks", "yuv422p10le"),
              (".mpg", "mpeg2video", "yuv420p"), (".flv", "flv", "yuv420p")]


@pytest.mark.parametrize("suffix,codec,pix_fmt", CONTAINERS, ids=[f"{c[1]}-{c[2]}{c[0]}" for c in CONTAINERS])
def test_probe_and_decode_every_container(tmp_path, suffix, codec, pix_fmt):
    path = write_frames(tmp_path / f"v{suffix}", numbered_frames(30), fps=10, codec=codec, pix_fmt=pix_fmt)
    info = probe(path)
    assert info.duration == pytest.approx(3.0, abs=0.15)
    assert info.fps == pytest.approx(10)
    assert (info.width, info.height) == (64, 48)
    clip = decode_clip(path, 1.0, 1.0, 5, side_size=24)
    assert clip.shape == (5, 24, 32, 3) and clip.dtype == np.uint8
    # samples at 1.1, 1.3, ... 1.9 s are frames 11, 13, ... 19 of a 10 fps video
    assert [frame_index(f) for f in clip] == [11, 13, 15, 17, 19]


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])
def test_video_with_an_audio_track(tmp_path, suffix):
    import av

    path = tmp_path / f"av{suffix}"
    with av.open(str(path), "w") as c:
        video, audio = c.add_stream("libx264", rate=10), c.add_stream("aac", rate=16000)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i, array in enumerate(numbered_frames(30)):
            packets = list(video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1600), dtype=np.float32), format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 16000, i * 1600
            for p in packets + list(audio.encode(sound)):
                c.mux(p)
        for p in list(video.encode()) + list(audio.encode()):
            c.mux(p)
    assert probe(path).duration == pytest.approx(3.0, abs=0.15)
    assert [frame_index(f) for f in decode_clip(path, 1.0, 1.0, 5)] == [11, 13, 15, 17, 19]


def test_seek_lands_on_the_right_frames_with_sparse_keyframes(tmp_path):
    path = write_frames(tmp_path / "gop.mp4", numbered_frames(30), fps=10, gop=12)
    clip = decode_clip(path, 2.05, 0.4, 4)
    assert [frame_index(f) for f in clip] == [21, 22, 23, 24]


def test_variable_frame_rate_picks_the_frame_on_screen(tmp_path):
    times = [0, 100, 150, 600, 700, 1500, 1600, 1900]  # ms, uneven gaps
    path = write_frames(tmp_path / "vfr.mkv", numbered_frames(len(times)), fps=10, pts_ms=times)
    clip = decode_clip(path, 0.0, 2.0, 4)  # samples at 0.25, 0.75, 1.25, 1.75 s
    assert [frame_index(f) for f in clip] == [2, 4, 4, 6]


def test_clip_past_the_end_repeats_the_last_frame(tmp_path):
    path = write_frames(tmp_path / "short.mp4", numbered_frames(10), fps=10)
    clip = decode_clip(path, 0.0, 2.0, 4)  # 0.25, 0.75 inside; 1.25, 1.75 past the end
    assert [frame_index(f) for f in clip] == [2, 7, 9, 9]


def test_odd_sizes_resize_short_side(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (6, 55, 97, 3), dtype=np.uint8)
    path = write_frames(tmp_path / "odd.avi", frames, codec="mjpeg", pix_fmt="yuvj420p")
    clip = decode_clip(path, 0.0, 0.5, 3, side_size=32)
    assert clip.shape == (3, 32, 56, 3)
    assert center_crop(clip, 32).shape == (3, 32, 32, 3)


def _audio_only(path):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in list(s.encode(frame)) + list(s.encode()):
            c.mux(p)
    return path


@pytest.mark.parametrize("kind", ["missing", "empty", "random", "text", "truncated", "audio_only"])
def test_bad_files_raise_media_error_naming_the_path(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "text":
        path.write_text("this is not a video\n" * 50)
    elif kind == "truncated":
        good = write_frames(tmp_path / "good.mp4", numbered_frames(30))
        path.write_bytes(good.read_bytes()[:400])
    elif kind == "audio_only":
        _audio_only(path)
    # both entry points refuse the file on their own (training probes; prediction and serving decode)
    for read in (lambda: probe(path), lambda: decode_clip(path, 0.5, 1, 4)):
        with pytest.raises(MediaError) as err:
            read()
        assert str(path) in str(err.value)
        assert "\n" not in str(err.value)


def test_clip_planning():
    assert sample_times(1.0, 1.0, 4) == [1.125, 1.375, 1.625, 1.875]
    assert evenly_spaced_starts(10.0, 2.0, 1) == [4.0]
    assert evenly_spaced_starts(10.0, 2.0, 4) == [1.0, 3.0, 5.0, 7.0]
    assert evenly_spaced_starts(1.0, 2.0, 3) == [0.0]
    assert consecutive_starts(5.0, 2.0) == [0.0, 2.0]
    assert consecutive_starts(1.0, 2.0) == [0.0]
