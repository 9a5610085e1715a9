"""Video datasets: Kinetics-style folders or CSVs in, decoded uint8 clips out.

Finding and checking the files (every video is probed before training, and bad ones are
reported by path) is separate from the torch `Dataset`, which only decodes and augments.
Exercised by `tiffin train video --train-folder DIR`.
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tiffin.errors import MediaError, TiffinError
from tiffin.spec import VideoSpec
from tiffin.video_io import (
    VIDEO_SUFFIXES,
    consecutive_starts,
    decode_clip,
    evenly_spaced_starts,
    is_video_file,
    probe,
)
from train.table_io import open_table

log = logging.getLogger("tiffin")

CLIP_SAMPLERS = ("random", "uniform", "constant_clips_per_video")


@dataclass(frozen=True)
class Sample:
    """A labelled video file."""

    path: Path
    label: str


@dataclass(frozen=True)
class Video:
    """A labelled video that probed fine, with its duration in seconds."""

    path: Path
    label: str
    duration: float


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


def read_csv(path: str | Path, option: str = "--train-csv") -> list[Sample]:
    """Read `path,label` rows (comma or tab separated, header required, BOM tolerated).

    Relative paths are relative to the CSV's folder.

    Raises:
        TiffinError: missing file or columns, or an empty file.
    """
    path, reader = open_table(path, option, "a CSV with path,label columns")
    fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
    path_col = next((fields[c] for c in _PATH_COLUMNS if c in fields), None)
    label_col = next((fields[c] for c in _LABEL_COLUMNS if c in fields), None)
    if path_col is None or label_col is None:
        raise TiffinError(f"{option} {path}: needs a header with 'path' and 'label' columns, found {list(fields)}")
    samples = []
    for row in reader:
        file, label = (row.get(path_col) or "").strip(), (row.get(label_col) or "").strip()
        if not file and not label:
            continue
        if not file or not label:
            raise TiffinError(f"{option} {path}: line {reader.line_num} lacks a path or a label")
        file_path = Path(file).expanduser()
        samples.append(Sample(file_path if file_path.is_absolute() else path.parent / file_path, label))
    if not samples:
        raise TiffinError(f"{option} {path}: has no rows")
    return samples


def check_classes(samples: list[Sample], option: str) -> list[str]:
    """Sorted class names; refuses a dataset of fewer than two classes."""
    labels = sorted({s.label for s in samples})
    if len(labels) < 2:
        raise TiffinError(f"{option}: found {len(labels)} class ({', '.join(labels)}); classification needs at least 2")
    return labels


def probe_all(samples: list[Sample], strict: bool = False) -> tuple[list[Video], list[MediaError]]:
    """Probe every file (threads: PyAV releases the GIL); split into usable videos and errors.

    Raises:
        MediaError: the first bad file, when `strict`.
    """

    def one(sample: Sample) -> Video | MediaError:
        try:
            return Video(sample.path, sample.label, probe(sample.path).duration)
        except MediaError as err:
            return err

    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        results = list(pool.map(one, samples))
    bad = [r for r in results if isinstance(r, MediaError)]
    if bad and strict:
        raise bad[0]
    return [r for r in results if isinstance(r, Video)], bad


def drop_duplicates(samples: list[Sample], option: str) -> tuple[list[Sample], int]:
    """Keep the first of rows naming the same file; the same file under two labels is an error.

    Returns:
        The unique samples and how many duplicates were dropped.
    """
    first: dict[Path, Sample] = {}
    for s in samples:
        key = s.path.resolve()
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


class VideoClipDataset(Dataset):
    """Clips of labelled videos as uint8 tensors [T, crop, crop, 3].

    `random`: one clip per video at a random start each epoch (training default).
    `uniform`: every back-to-back clip of each video. `constant_clips_per_video`: N clips
    spread evenly over each video. Without `train`, clips are centre-cropped and unflipped.
    """

    def __init__(
        self,
        videos: list[Video],
        labels: list[str],
        spec: VideoSpec,
        sampler: str = "random",
        clips_per_video: int = 1,
        train: bool = False,
        flip: bool = True,
        strict: bool = False,
        seed: int = 0,
    ):
        if sampler not in CLIP_SAMPLERS:
            raise TiffinError(f"--clip-sampler {sampler}: choose one of {', '.join(CLIP_SAMPLERS)}")
        self.spec, self.train, self.flip, self.strict, self.seed = spec, train, flip, strict, seed
        index = {label: i for i, label in enumerate(labels)}
        self.items: list[tuple[Path, int, float | None, float]] = []
        for v in videos:
            if sampler == "random":
                starts: list[float | None] = [None]
            elif sampler == "uniform":
                starts = consecutive_starts(v.duration, spec.clip_duration)
            else:
                starts = evenly_spaced_starts(v.duration, spec.clip_duration, clips_per_video)
            self.items += [(v.path, index[v.label], s, v.duration) for s in starts]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict | None:
        """Item `i`, or `(i, epoch)` as EpochShuffle gives it: the clip start, scale, crop and flip
        are drawn from (seed, epoch, i), so an epoch's clips are the same in any worker and after
        a resume."""
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        rng = np.random.default_rng([self.seed, epoch, i])
        path, label, start, duration = self.items[i]
        spec = self.spec
        if start is None:
            start = float(rng.random() * max(0.0, duration - spec.clip_duration))
        side = spec.side_size
        if self.train:
            side = int(rng.integers(spec.side_size, round(spec.side_size * 1.25) + 1))
        try:
            frames = decode_clip(path, start, spec.clip_duration, spec.num_frames, side)
        except MediaError as err:
            if self.strict:
                raise
            log.warning("skipped %s", err)
            return None
        frames = self._crop(frames, rng)
        return {"video": torch.from_numpy(frames), "label": label, "index": i}

    def _crop(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = self.spec.crop_size
        _, h, w, _ = frames.shape
        if self.train:
            top = int(rng.integers(0, h - size + 1))
            left = int(rng.integers(0, w - size + 1))
        else:
            top, left = (h - size) // 2, (w - size) // 2
        frames = frames[:, top : top + size, left : left + size]
        if self.train and self.flip and bool(rng.random() < 0.5):
            frames = frames[:, :, ::-1]
        return np.ascontiguousarray(frames)


class EpochShuffle(Sampler):
    """A seeded shuffle per epoch that yields `(index, epoch)`, so the dataset can draw each
    item's augmentation from (seed, epoch, index): no state lives in workers or global RNGs."""

    def __init__(self, size: int, seed: int = 0, epoch: int = 0):
        self.size, self.seed, self.epoch = size, seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        # a generator: the order is drawn at the first fetch, after the epoch was set
        epoch = self.epoch
        yield from ((int(i), epoch) for i in np.random.default_rng([self.seed, epoch]).permutation(self.size))

    def __len__(self) -> int:
        return self.size


def collate_clips(batch: list[dict | None]) -> dict | None:
    """Stack clips, dropping the ones that failed to decode (None when all did)."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return {
        "video": torch.stack([b["video"] for b in batch]),
        "label": torch.tensor([b["label"] for b in batch]),
        "index": torch.tensor([b["index"] for b in batch]),
    }
