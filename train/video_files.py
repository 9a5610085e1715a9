"""Finding and checking the videos of a dataset, torch-free: Kinetics-style folders and CSVs.

Every video is probed before training, and bad ones are reported by path. `tiffin evaluate`
reads data this way too, where torch may not be installed; the torch `Dataset` that decodes
and augments is train/video_data.py.
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from tiffin.errors import MediaError, TiffinError
from tiffin.video_io import (
    VIDEO_SUFFIXES,
    is_video_file,
    probe,
)
from tiffin.train.choices import CLIP_SAMPLERS  # noqa: F401  re-exported
from tiffin.train.bad_files import CHUNK, BadFiles, all_bad_so_far, early_stop_message
from tiffin.train.table_io import open_table

log = logging.getLogger("tiffin")


@dataclass(frozen=True)
class Sample:
    """A labelled video file, or the span `start`-`end` seconds of one (a CSV row's segment)."""

    path: Path
    label: str
    start: float = 0.0
    end: float | None = None


@dataclass(frozen=True)
class Video:
    """A labelled video (or span of one) that probed fine: clips are drawn from `start` to
    `start + duration` seconds. `declared` is set when the file is cut short of its header."""

    path: Path
    label: str
    duration: float
    start: float = 0.0
    declared: float | None = None


def discover_folder(root: str | Path, option: str = "--train-folder") -> list[Sample]:
    """List ROOT/<class>/<video> files (class folders may nest subfolders).

    Raises:
        TiffinError: missing folder, no class folders, or a class folder with no videos.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TiffinError(f"{option} {root}: no such folder; give a folder of class folders (DIR/<class>/<video>)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise TiffinError(f"{option} {root}: has no class folders; lay videos out as {root}/<class>/<video>")
    samples = []
    for class_dir in class_dirs:
        files = []
        # followlinks=False: a symlinked folder inside a class cannot loop the walk forever.
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [Path(dirpath) / f for f in sorted(filenames) if is_video_file(Path(f))]
        if not files:
            raise TiffinError(
                f"{option} {root}: class folder {class_dir.name!r} has no videos ({' '.join(VIDEO_SUFFIXES)}); "
                "add videos or remove the folder"
            )
        samples += [Sample(f, class_dir.name) for f in files]
    return samples


_PATH_COLUMNS = ("path", "video", "file", "filename")
_LABEL_COLUMNS = ("label", "class", "target")
_START_COLUMNS, _END_COLUMNS = ("start", "start_time", "start_sec"), ("end", "end_time", "end_sec")


def _seconds(value: str | None, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise TiffinError(f"{where}: {value.strip()!r} is not a number of seconds") from None
    if not seconds >= 0:
        raise TiffinError(f"{where}: {value.strip()!r} is not a time in the video (seconds >= 0)")
    return seconds


def read_csv(path: str | Path, option: str = "--train-csv", path_column: str | None = None,
             label_column: str | None = None) -> list[Sample]:
    """Read `path,label` rows (comma or tab separated, header required, BOM tolerated); the
    columns are the ones named, else the first of path/video/file/filename and label/class/target.
    Optional `start`/`end` columns (seconds) make a row a segment of a longer video.

    Relative paths are relative to the CSV's folder.

    Raises:
        TiffinError: missing file or columns, an empty file, or a segment that ends before it starts.
    """
    path, reader = open_table(path, option, "a CSV with path,label columns")
    fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
    path_names = (path_column.strip().lower(),) if path_column else _PATH_COLUMNS
    label_names = (label_column.strip().lower(),) if label_column else _LABEL_COLUMNS
    path_col = next((fields[c] for c in path_names if c in fields), None)
    label_col = next((fields[c] for c in label_names if c in fields), None)
    start_col = next((fields[c] for c in _START_COLUMNS if c in fields), None)
    end_col = next((fields[c] for c in _END_COLUMNS if c in fields), None)
    if path_col is None or label_col is None:
        raise TiffinError(f"{option} {path}: needs a header with {path_names[0]!r} and {label_names[0]!r} columns, "
                          f"found {list(fields)}")
    samples = []
    for row in reader:
        file, label = (row.get(path_col) or "").strip(), (row.get(label_col) or "").strip()
        if not file and not label:
            continue
        where = f"{option} {path}: line {reader.line_num}"
        if not file or not label:
            raise TiffinError(f"{where} lacks a path or a label")
        start = _seconds(row.get(start_col) if start_col else None, where) or 0.0
        end = _seconds(row.get(end_col) if end_col else None, where)
        if end is not None and end <= start:
            raise TiffinError(f"{where}: its segment ends ({end:g} s) before it starts ({start:g} s)")
        file_path = Path(file).expanduser()
        samples.append(Sample(file_path if file_path.is_absolute() else path.parent / file_path, label, start, end))
    if not samples:
        raise TiffinError(f"{option} {path}: has no rows")
    return samples


def check_classes(samples: list[Sample], option: str) -> list[str]:
    """Sorted class names; refuses a dataset of fewer than two classes."""
    labels = sorted({s.label for s in samples})
    if len(labels) < 2:
        raise TiffinError(f"{option}: found {len(labels)} class ({', '.join(labels)}); classification needs at least 2")
    return labels


def probe_all(samples: list[Sample], strict: bool = False, clip_duration: float | None = None,
              source: str = "the video list") -> tuple[list[Video], BadFiles]:
    """Probe every file (threads: PyAV releases the GIL); split into usable videos and errors
    (a BadFiles: the first ones kept, all counted, so a million bad rows cost little memory).

    A file cut short of its header (a scraped download) is used for the part that can be read
    when a `clip_duration` clip fits in it, and is an error otherwise; a segment must lie in
    the readable part. Files are probed in chunks, in the order listed, so a list whose first
    EARLY_STOP files are all bad stops there (`source` names the list in that error).

    Raises:
        MediaError: the first bad file, when `strict`.
        TiffinError: none of the first EARLY_STOP files is usable.
    """

    def one(sample: Sample) -> Video | MediaError:
        try:
            info = probe(sample.path)
        except MediaError as err:
            return err
        end = info.duration if sample.end is None else min(sample.end, info.duration)
        if end <= sample.start:
            return MediaError(str(sample.path), f"has no video from {sample.start:g} s (it lasts {info.duration:.2f} s)")
        if info.declared is not None and clip_duration is not None and end - sample.start < clip_duration:
            return MediaError(str(sample.path), f"is {info.truncation}, too little for one {clip_duration:g} s clip")
        return Video(sample.path, sample.label, end - sample.start, sample.start, info.declared)

    videos, bad = [], BadFiles()
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        for at in range(0, len(samples), CHUNK):
            for result in pool.map(one, samples[at : at + CHUNK]):
                if isinstance(result, Video):
                    videos.append(result)
                    continue
                # without its traceback: a kept error must not hold the probing frames alive
                bad.add(result.with_traceback(None))
                if strict:
                    raise result
            if all_bad_so_far(bad.total, len(videos)):
                raise TiffinError(early_stop_message(source, bad, len(samples), "video"))
    return videos, bad


def drop_duplicates(samples: list[Sample], option: str) -> tuple[list[Sample], int]:
    """Keep the first of rows naming the same file; the same file under two labels is an error.

    Returns:
        The unique samples and how many duplicates were dropped.
    """
    first: dict[tuple, Sample] = {}
    for s in samples:
        key = (s.path.resolve(), s.start, s.end)  # segments of one video are different samples
        if key in first and first[key].label != s.label:
            raise TiffinError(f"{option}: {s.path} is labelled both {first[key].label!r} and {s.label!r}; keep one")
        first.setdefault(key, s)
    return list(first.values()), len(samples) - len(first)


def stratified_split(videos: list[Video], fraction: float, seed: int) -> tuple[list[Video], list[Video]]:
    """Hold out `fraction` of each class (at least one video where a class has two or more)."""
    by_label: dict[str, list[Video]] = defaultdict(list)
    for v in videos:
        by_label[v.label].append(v)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda v: str(v.path))
        rng.shuffle(group)
        n_val = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        val += group[:n_val]
        train += group[n_val:]
    return train, val


def truncated(videos: list[Video]) -> list[dict[str, Any]]:
    """The videos cut short of their headers, with both spans (metrics.json's truncated_files)."""
    return [{"path": str(v.path), "readable_s": round(v.duration + v.start, 3), "declared_s": round(v.declared, 3)}
            for v in videos if v.declared is not None]


def say_truncated(videos: list[Video]) -> None:
    from tiffin.console import say

    for cut in truncated(videos):
        say(f"{cut['path']}: truncated: only {cut['readable_s']:.2f} s of the {cut['declared_s']:.2f} s its header "
            "declares can be read; clips come from that part", prefix="[yellow]note[/] ")
