"""Parity-check and calibration inputs gathered from real media (`--check-data`,
`--calibration-data`): a media file, a folder of them, or a CSV/TSV listing them, decoded as
validation decodes them and batched 4 at a time in the graph's input layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tiffin.errors import TiffinError
from tiffin.tasks import TASKS


def real_samples(task: str, loaded, path: Path, limit: int = 4, option: str = "--check-data"
                 ) -> list[tuple[torch.Tensor, ...]]:
    """Inputs from real files, at most `limit`, one batch per 4: a media file, a folder of them, or a
    CSV/TSV whose first column lists them (relative to the CSV, as training CSVs do)."""
    path = Path(path)
    if not path.exists():
        raise TiffinError(f"{option} {path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.suffix.lower() in (".csv", ".tsv"):
        from tiffin.train.table_io import open_table

        _, reader = open_table(path, option, "a CSV whose first column lists media files")
        first = reader.fieldnames[0] if reader.fieldnames else None
        files = [path.parent / row[first] for row in reader if first and row.get(first)]
    else:
        files = [path]
    batches = TASKS[task].part("samples")(loaded, files, limit)
    if not batches:
        raise TiffinError(f"{option} {path}: no {TASKS[task].short} files")
    return batches


def speech_samples(loaded, files: list[Path], limit: int) -> list[tuple[torch.Tensor, ...]]:
    """Padded waveform batches (4 a batch) of the first `limit` audio files."""
    from tiffin.audio_io import is_audio_file, load_audio

    waves = [load_audio(f, loaded.spec.sample_rate) for f in files if is_audio_file(f)][:limit]
    batches = []
    for k in range(0, len(waves), 4):
        group = waves[k : k + 4]
        batch = torch.zeros(len(group), max(len(w) for w in group))
        for i, w in enumerate(group):
            batch[i, : len(w)] = torch.from_numpy(w)
        batches.append((batch, torch.tensor([len(w) for w in group])))
    return batches


def video_samples(loaded, files: list[Path], limit: int) -> list[tuple[torch.Tensor, ...]]:
    """Clip batches (4 a batch) of the first `limit` video files, one clip each as validation decodes it."""
    from tiffin.inference import video_clips
    from tiffin.video_io import is_video_file

    clips = [video_clips(f, loaded.spec, 1)[0] for f in [f for f in files if is_video_file(f)][:limit]]
    return [(torch.from_numpy(np.stack(clips[k : k + 4])),) for k in range(0, len(clips), 4)]
