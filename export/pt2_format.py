"""torch.export (`.pt2`): the successor torch 2.11 points to from `torch.jit` (whose trace,
freeze, save and lite interpreter it marks deprecated).

The network is exported whole (uint8 frames or waveform + lengths in, logits out, preprocessing
inside, as every tiffin format), with every axis the spec calls dynamic left to torch.export
to bound (`Dim.AUTO`: a wav2vec2's sample axis must cover its receptive field, and a fixed
minimum would be wrong for another model), and saved with tiffin.json in its extra files. It
runs where torch runs (`torch.export.load(...).module()`), and is what ExecuTorch and
AOTInductor start from.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from tiffin.export.specs import ExportSpec


def export_pt2(net: torch.nn.Module, spec: ExportSpec, path: Path, precision: str, opset: int | None,
               metadata: dict, calibration=None) -> dict:
    """Export the whole network with torch.export and save it with `metadata` as tiffin.json in its
    extra files; adds nothing to tiffin.json."""
    dynamic = tuple({axis: torch.export.Dim.AUTO for axis in io.dynamic()} or None for io in spec.inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tensor-to-scalar notes from pytorchvideo's heads
        program = torch.export.export(net.eval(), tuple(spec.trace_sample()), dynamic_shapes=dynamic)
    torch.export.save(program, str(path), extra_files={"tiffin.json": json.dumps(metadata)})
    return {}
