"""TorchScript export (trace, saved with tiffin.json in `_extra_files`) and the mobile variant.

bf16 casts the traced module's weights to bfloat16 behind float32 inputs and outputs (for
CPUs with bf16 units). The server-side TorchScript is frozen (weights inlined as constants,
so the JIT can fold and fuse), and a video network's 3-D convolution weights are stored
channels-last, which lets oneDNN pick its fast 3-D kernels: SlowFast-R50 went from 487 ms
(bf16, contiguous, not frozen) to 157 ms on a 2-core CPU, eager fp32 being 686 ms
(benchmarks/video_inference.py). Mobile is the fp32 trace passed through
`optimize_for_mobile` and saved for the lite interpreter (`.ptl`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from tiffin.export.specs import ExportSpec


class _Bf16(torch.nn.Module):
    """Runs the wrapped network in bfloat16, float32 at the boundary; integer inputs pass as they are."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        import copy

        self.net = copy.deepcopy(net).to(torch.bfloat16)  # the float32 original stays the parity reference

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        cast = [x.to(torch.bfloat16) if x.is_floating_point() else x for x in inputs]
        return self.net(*cast).float()


def _channels_last(net: torch.nn.Module) -> torch.nn.Module:
    """A copy whose 3-D convolution weights are channels-last (video); other networks as they are."""
    import copy

    if not any(isinstance(m, torch.nn.Conv3d) for m in net.modules()):
        return net
    return copy.deepcopy(net).to(memory_format=torch.channels_last_3d)


def _trace(net: torch.nn.Module, spec: ExportSpec, precision: str) -> torch.jit.ScriptModule:
    module = _Bf16(net) if precision == "bf16" else net
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # check_trace off: the parity gate below checks the saved file on other shapes instead.
        return torch.jit.trace(module, spec.trace_sample(), check_trace=False)


def export_torchscript(net: torch.nn.Module, spec: ExportSpec, path: Path, precision: str, opset: int | None,
                       metadata: dict, calibration=None) -> dict:
    """Trace (bf16: behind float32 boundaries), freeze and save with `metadata` as tiffin.json in
    its extra files; adds nothing to tiffin.json."""
    traced = _trace(_channels_last(net), spec, precision).eval()
    torch.jit.save(torch.jit.freeze(traced), str(path), _extra_files={"tiffin.json": json.dumps(metadata)})
    return {}


def export_mobile(net: torch.nn.Module, spec: ExportSpec, path: Path, precision: str, opset: int | None,
                  metadata: dict, calibration=None) -> dict:
    """The fp32 trace through `optimize_for_mobile`, saved for the lite interpreter with `metadata`
    as tiffin.json in its extra files; adds nothing to tiffin.json."""
    from torch.utils.mobile_optimizer import MobileOptimizerType, optimize_for_mobile

    # Conv-BatchNorm fusion is skipped: on X3D (BatchNorm after depthwise 3-D convs) it changed the
    # logits by up to 6.8 (measured on the demo model); the parity gate caught it.
    optimized = optimize_for_mobile(_trace(net, spec, precision),
                                    optimization_blocklist={MobileOptimizerType.CONV_BN_FUSION})
    optimized._save_for_lite_interpreter(str(path), _extra_files={"tiffin.json": json.dumps(metadata)})
    return {}
