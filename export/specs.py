"""What each task's exported graph looks like, declared as data (Optimum-style export configs).

Input/output names, dtypes and dynamic axes, the tracing sample, the check samples (other batch
sizes and lengths than the tracing sample, so baked-in shapes are caught) and the parity
tolerances per precision live here, not in the exporters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

# Parity tolerances per precision: |artifact - pytorch| <= atol + rtol * |pytorch| on every output value,
# plus task-level agreement (top-1 for classification, transcript CER for speech).
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"atol": 1e-4, "rtol": 1e-3, "min_top1_agreement": 1.0, "max_cer": 0.0},
    # half precision: values drift, decisions must not (near-ties on random inputs may flip)
    "fp16": {"atol": 0.1, "rtol": 0.05, "min_top1_agreement": 0.9, "max_cer": 0.05},
    "bf16": {"atol": 0.25, "rtol": 0.1, "min_top1_agreement": 0.8, "max_cer": 0.1},
    # int8: quantisation error is large on individual logits; what must hold is the decisions
    "int8": {"atol": 1.5, "rtol": 0.3, "min_top1_agreement": 0.75, "max_cer": 0.15},
}


@dataclass(frozen=True)
class IOSpec:
    """One graph input or output: name, dtype and axes (an int is fixed, a str is dynamic)."""

    name: str
    dtype: str
    axes: tuple[int | str, ...]

    def dynamic(self) -> dict[int, str]:
        return {i: a for i, a in enumerate(self.axes) if isinstance(a, str)}


@dataclass(frozen=True)
class ExportSpec:
    """How a task's network is traced and checked."""

    task: str
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
    trace_sample: Callable[[], tuple[torch.Tensor, ...]]
    check_samples: Callable[[], list[tuple[torch.Tensor, ...]]]
    tolerances: dict[str, dict[str, float]] = field(default_factory=lambda: TOLERANCES)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {io.name: io.dynamic() for io in self.inputs + self.outputs if io.dynamic()}

    def describe(self) -> dict:
        """The JSON form stored in tiffin.json."""
        return {
            "inputs": [{"name": i.name, "dtype": i.dtype, "shape": list(i.axes)} for i in self.inputs],
            "outputs": [{"name": o.name, "dtype": o.dtype, "shape": list(o.axes)} for o in self.outputs],
            "dynamic_axes": {k: {str(i): n for i, n in v.items()} for k, v in self.dynamic_axes().items()},
        }


def video_export_spec(num_frames: int, crop: int, num_classes: int, batch: int | None = None) -> ExportSpec:
    """uint8 frames [batch, T, S, S, 3] -> logits [batch, classes].

    Dynamic batch (`batch` None): traced at 2 (the smallest that keeps the axis symbolic), checked
    at 3 and 1. Fixed batch: traced and checked at `batch` on other inputs.
    """

    def frames(batch: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (batch, num_frames, crop, crop, 3), dtype=torch.uint8, generator=g)

    b = batch or "batch"
    return ExportSpec(
        task="video-classification",
        inputs=(IOSpec("frames", "uint8", (b, num_frames, crop, crop, 3)),),
        outputs=(IOSpec("logits", "float32", (b, num_classes)),),
        trace_sample=lambda: (frames(batch or 2, 0),),
        check_samples=lambda: [(frames(batch or 3, 1),), (frames(batch or 1, 2),)],
    )


def speech_export_spec(sample_rate: int, vocab_size: int, batch: int | None = None) -> ExportSpec:
    """float32 waveform [batch, samples] + lengths [batch] -> logits [batch, frames, vocab].

    Traced at 2 x 1 s; checked at 3 utterances of unequal lengths up to 1.7 s and at 1 x 0.5 s
    (with a fixed `batch`, that many utterances each time, lengths still varied).
    """

    def waves(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        x = torch.zeros(len(lengths), max(lengths))
        for i, n in enumerate(lengths):
            x[i, :n] = 0.1 * torch.randn(n, generator=g)
        return x, torch.tensor(lengths, dtype=torch.int64)

    sr, b = sample_rate, batch or "batch"

    def lengths(longest: float, n: int) -> list[int]:
        return [int(sr * longest * (1 - 0.6 * i / max(1, n - 1))) for i in range(n)]

    return ExportSpec(
        task="speech-recognition",
        inputs=(IOSpec("waveform", "float32", (b, "samples")), IOSpec("lengths", "int64", (b,))),
        outputs=(IOSpec("logits", "float32", (b, "frames", vocab_size)),),
        trace_sample=lambda: waves([sr] * (batch or 2), 0),
        check_samples=lambda: [waves(lengths(1.7, batch or 3), 1), waves(lengths(0.5, batch or 1), 2)],
    )


def video_spec_for(spec, batch: int | None = None) -> ExportSpec:
    """The export spec of a video model with preprocessing `spec` (tiffin.spec.VideoSpec)."""
    return video_export_spec(spec.num_frames, spec.crop_size, len(spec.labels), batch)


def speech_spec_for(spec, batch: int | None = None) -> ExportSpec:
    """The export spec of a speech model with preprocessing `spec` (tiffin.spec.SpeechSpec)."""
    return speech_export_spec(spec.sample_rate, len(spec.vocab), batch)
