"""The numpy steps around the network: clips in, scores out; waveforms padded, frames counted.

The network (PyTorch, ONNX Runtime) is whatever maps model inputs to logits; everything around
it (which clips to decode, how scores are averaged and rounded, how waveforms are padded into a
batch and logits cut back to each utterance) lives here once. The predictors that call these
steps for a file, and opening an artifact, are tiffin.host's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tiffin.errors import MediaError, TiffinError
from tiffin.limits import DecodeBudget
from tiffin.spec import VideoSpec
from tiffin.video_io import VideoInfo, center_crop, decode_clip, evenly_spaced_starts, probe

SCORE_DIGITS = 6


def video_clips(path: str | Path, spec: VideoSpec, clips: int, duration: float | None = None,
                span: tuple[float, float | None] = (0.0, None), budget: DecodeBudget | None = None) -> np.ndarray:
    """`clips` centre-cropped clips spread over the whole video (or over its span `start`-`end`
    seconds): uint8 [N, T, S, S, 3], decoded within `budget` (the file's, tiffin.limits).

    Raises:
        MediaError: unreadable, a span outside the video, or over a limit.
    """
    budget = budget or DecodeBudget(str(path))
    duration = probe(path, budget).duration if duration is None else duration
    first, last = span[0], duration if span[1] is None else min(span[1], duration)
    if not 0 <= first < last:
        raise MediaError(str(path), f"has no video from {first:g} s to {last:g} s (it lasts {duration:.2f} s)")
    starts = [first + s for s in evenly_spaced_starts(last - first, spec.clip_duration, clips)]
    return np.stack([
        center_crop(decode_clip(path, s, spec.clip_duration, spec.num_frames, spec.side_size, budget), spec.crop_size)
        for s in starts
    ])


def readable_warnings(info: VideoInfo, clip_duration: float) -> list[str]:
    """`warnings` for an answer from a video cut short (answered from its readable part).

    Raises:
        MediaError: cut so short that no clip fits in the part that can be read.
    """
    if info.truncation is None:
        return []
    if info.duration < clip_duration:
        raise MediaError(info.path, f"is {info.truncation[0].lower()}{info.truncation[1:]}, too little for one "
                                    f"{clip_duration:g} s clip")
    return [f"{info.truncation}; answered from that part"]


def top_labels(logits: np.ndarray, labels: tuple[str, ...] | list[str], top_k: int) -> list[dict[str, Any]]:
    """The `top_k` labels of one video from its clips' logits [clips, classes]: softmax per clip,
    mean over clips, highest first, scores rounded to 6 digits."""
    z = np.asarray(logits, dtype=np.float64)
    if z.shape[-1] > len(labels):  # a class index past the list: labels that are not the model's
        raise TiffinError(f"the model has {z.shape[-1]} outputs but {len(labels)} labels; give the labels it was "
                          "trained with (export it again)")
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    probs = (z / z.sum(axis=-1, keepdims=True)).mean(axis=0)
    k = max(1, min(top_k, len(labels)))
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": labels[i], "score": round(float(probs[i]), SCORE_DIGITS)} for i in order]


def pad_waves(waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A batch of mono waveforms zero-padded to the longest: (float32 [B, samples], int64 lengths [B])."""
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    batch = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return batch, lengths


def receptive_field(kernels: list[int] | tuple[int, ...], strides: list[int] | tuple[int, ...]) -> int:
    """Fewest input samples that give one output frame (400 for wav2vec2: 25 ms at 16 kHz)."""
    samples = 1
    for kernel, stride in reversed(list(zip(kernels, strides))):
        samples = (samples - 1) * stride + kernel
    return samples


def pad_to_one_frame(wave: np.ndarray, kernels: list[int] | tuple[int, ...], strides: list[int] | tuple[int, ...]
                     ) -> np.ndarray:
    """A recording shorter than the conv encoder's receptive field, zero-padded to it, so a blip
    of sound gets a (likely empty) transcript instead of a convolution error."""
    need = receptive_field(kernels, strides)
    return wave if len(wave) >= need else np.pad(wave, (0, need - len(wave)))


def output_frames(samples: int, kernels: list[int] | tuple[int, ...], strides: list[int] | tuple[int, ...]) -> int:
    """Logit frames a wav2vec2-style conv feature encoder gives for `samples` input samples."""
    for kernel, stride in zip(kernels, strides):
        samples = (samples - kernel) // stride + 1
    return max(0, samples)
