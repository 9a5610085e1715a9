"""The one source of preprocessing truth for video classification.

A `VideoSpec` travels inside every checkpoint (and, later, in `tiffin.json`), so training,
prediction and serving decode and normalise a clip with the same numbers. No torch here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Kinetics statistics used by every PyTorchVideo model-zoo checkpoint.
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class VideoSpec:
    """Everything needed to turn a video file into model input.

    Host side (decode): `clip_duration` seconds from a clip start, `num_frames` frames
    sampled at the midpoints of equal slices of the clip, short side resized to
    `side_size`, centre (or, in training, random) `crop_size` square.
    In the model graph: uint8 [B, T, H, W, 3] -> float, /255, (x - mean) / std,
    [B, 3, T, H, W] (`layout` "BCTHW", the zoos') or [B, T, 3, H, W] ("BTCHW", transformers'
    video models), and SlowFast pathway packing with `slowfast_alpha`.
    """

    num_frames: int
    clip_duration: float
    side_size: int
    crop_size: int
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    slowfast_alpha: int | None = None
    labels: tuple[str, ...] = field(default_factory=tuple)
    layout: str = "BCTHW"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"], d["labels"] = list(self.mean), list(self.std), list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VideoSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("mean", "std", "labels"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


@dataclass(frozen=True)
class SpeechSpec:
    """Everything needed to turn an audio file into model input, and logits into text.

    Host side: decode, mix to mono, resample to `sample_rate` (tiffin.audio_io). In the model
    graph: per-utterance zero-mean unit-variance normalisation over the real (unpadded)
    samples when `normalize` (wav2vec2's feature extractor does this on the host), or, for the
    log-mel families, the family's feature extractor described by `front_end` (its kind and
    settings: tiffin.train.speech_features; checkpoints only, the exported graph holds it).
    Audio longer than `chunk_seconds` is run in windows overlapping by `stride_seconds` a side.
    Logits into text: `vocab` in id order, the CTC blank's id `blank_id` (None: `<pad>`'s), and
    `word_start`, the marker word pieces begin a word with ("▁"; None: characters, `|` between
    words); tiffin.ctc.Vocabulary.of_spec. The last three are left out of `to_dict` when None, so
    character models' specs read and write as before they existed.
    """

    sample_rate: int = 16000
    normalize: bool = True
    vocab: tuple[str, ...] = field(default_factory=tuple)
    chunk_seconds: float = 30.0
    stride_seconds: float = 5.0
    blank_id: int | None = None
    word_start: str | None = None
    front_end: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["vocab"] = list(self.vocab)
        for key in ("blank_id", "word_start", "front_end"):
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpeechSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "vocab" in known:
            known["vocab"] = tuple(known["vocab"])
        return cls(**known)
