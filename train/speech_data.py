"""Speech datasets: a CSV/TSV, JSON lines or a folder of audio + .txt in, padded batches out.

Rows are read and checked in train/speech_files.py (torch-free); here are the torch `Dataset`,
the bucketing sampler and collation. Every row is checked before training (audio readable, non-empty, finite; transcript non-empty
after normalisation) and bad ones are reported with their row and path. Batches group
utterances of similar length (bucketing) so padding stays low.
Exercised by `tiffin train speech --train-csv F`.
"""

from __future__ import annotations


import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tiffin.audio_io import load_audio
from tiffin.train.speech_files import (  # noqa: F401  re-exported: the readers live there, torch-free
    Row, Utterance, BadRow, read_table, read_jsonl, CheckReport, check_rows, drop_duplicates, ctc_frames_needed,
)
from tiffin.train.speech_layouts import read_folder, read_layout  # noqa: F401  re-exported


class SpeechDataset(Dataset):
    """Utterances as float32 waveforms at the model rate with their label ids."""

    def __init__(self, utterances: list[Utterance], sample_rate: int):
        self.utterances, self.sample_rate = utterances, sample_rate

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> dict:
        u = self.utterances[i]
        wave = load_audio(u.path, self.sample_rate, u.start, u.end)
        return {"wave": torch.from_numpy(wave), "ids": torch.tensor(u.ids, dtype=torch.long), "text": u.text}


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of utterances of similar length, in a shuffled order, sharded across processes.

    Each epoch: shuffle (seed + epoch), cut into pools of `pool_batches` batches, sort each pool
    by length, split into batches, shuffle the batches. Every process takes its own batches
    (rank::world_size), so DDP needs no DistributedSampler.
    """

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, pool_batches: int = 50):
        self.lengths, self.batch_size, self.shuffle, self.seed = lengths, batch_size, shuffle, seed
        self.rank, self.world_size, self.pool = rank, world_size, pool_batches * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.pool):
            pool = sorted(order[start : start + self.pool].tolist(), key=lambda i: self.lengths[i])
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        # Every process gets the same number of batches (DDP steps in lockstep): pad by repeating.
        per_rank = -(-len(batches) // self.world_size)
        batches += batches[: per_rank * self.world_size - len(batches)]
        return batches[self.rank :: self.world_size]

    def __iter__(self):
        # a generator: the batches are drawn at the first fetch, after the epoch was set
        yield from self._batches()

    def __len__(self) -> int:
        n_batches = -(-len(self.lengths) // self.batch_size)
        return -(-n_batches // self.world_size)


def collate_speech(batch: list[dict]) -> dict:
    """Zero-pad waveforms; labels padded with -1; lengths and the padding fraction alongside."""
    lengths = torch.tensor([len(b["wave"]) for b in batch])
    waves = torch.zeros(len(batch), int(lengths.max()))
    for i, b in enumerate(batch):
        waves[i, : len(b["wave"])] = b["wave"]
    label_lengths = torch.tensor([len(b["ids"]) for b in batch])
    labels = torch.full((len(batch), int(label_lengths.max())), -1, dtype=torch.long)
    for i, b in enumerate(batch):
        labels[i, : len(b["ids"])] = b["ids"]
    return {"wave": waves, "lengths": lengths, "labels": labels, "label_lengths": label_lengths,
            "texts": [b["text"] for b in batch], "pad_fraction": 1.0 - float(lengths.sum()) / waves.numel()}
