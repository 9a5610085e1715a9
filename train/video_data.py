"""Video datasets: Kinetics-style folders or CSVs in, decoded uint8 clips out.

Finding and checking the files (every video is probed before training, and bad ones are
reported by path) is train/video_files.py, torch-free; here is the torch `Dataset`, which only
decodes and augments.
Exercised by `tiffin train video --train-folder DIR`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tiffin.errors import MediaError, TiffinError
from tiffin.spec import VideoSpec
from tiffin.video_io import (
    consecutive_starts,
    decode_clip,
    evenly_spaced_starts,
)

from tiffin.train.video_files import (  # noqa: F401  re-exported: the readers live there, torch-free
    CLIP_SAMPLERS, Sample, Video, check_classes, discover_folder, drop_duplicates, probe_all, read_csv,
    stratified_split,
)

log = logging.getLogger("tiffin")


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
        # (path, label, clip start or None for a random one, span start, span length)
        self.items: list[tuple[Path, int, float | None, float, float]] = []
        for v in videos:
            if sampler == "random":
                starts: list[float | None] = [None]
            elif sampler == "uniform":
                starts = [v.start + s for s in consecutive_starts(v.duration, spec.clip_duration)]
            else:
                starts = [v.start + s for s in evenly_spaced_starts(v.duration, spec.clip_duration, clips_per_video)]
            self.items += [(v.path, index[v.label], s, v.start, v.duration) for s in starts]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict | None:
        """Item `i`, or `(i, epoch)` as EpochShuffle gives it: the clip start, scale, crop and flip
        are drawn from (seed, epoch, i), so an epoch's clips are the same in any worker and after
        a resume."""
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        rng = np.random.default_rng([self.seed, epoch, i])
        path, label, start, offset, duration = self.items[i]
        spec = self.spec
        if start is None:
            start = offset + float(rng.random() * max(0.0, duration - spec.clip_duration))
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

    def __init__(self, size: int, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1):
        """With `world_size` > 1, process `rank` takes every world_size-th item of the epoch's order
        (the order padded by wrapping round so every process gets as many)."""
        self.size, self.seed, self.epoch = size, seed, epoch
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        # a generator: the order is drawn at the first fetch, after the epoch was set
        epoch = self.epoch
        order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        if self.world_size > 1:
            order = np.resize(order, len(self) * self.world_size)[self.rank :: self.world_size]
        yield from ((int(i), epoch) for i in order)

    def __len__(self) -> int:
        return -(-self.size // self.world_size)


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
