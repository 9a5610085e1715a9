"""The table of runtimes an artifact runs on: format -> how to open a session over its model file.

A session is called with numpy arrays in the graph's input order and returns the first output
as a numpy array, whatever runs it, so the host path (tiffin.host), the parity gate and the
benchmark treat every artifact alike. ONNX Runtime and OpenVINO are torch-free (serving uses
them; OpenVINO reads the same ONNX file, and on CPUs where ONNX Runtime lacks fast 3-D
convolution kernels it is the faster one); TorchScript and the lite interpreter need torch,
imported only when such an artifact is opened. The first row for a format is its default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tiffin.errors import TiffinError


class _TorchModuleSession:
    """A loaded torch module called with numpy arrays, numpy out (the torch rows' shared call)."""

    module: Any

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs)).float().numpy()


class TorchScriptSession(_TorchModuleSession):
    """A saved TorchScript (.pt) or lite-interpreter (.ptl) module, numpy in and out."""

    def __init__(self, model_file: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True):
        import torch

        if Path(model_file).suffix == ".ptl":
            from torch.jit.mobile import _load_for_lite_interpreter

            self.module = _load_for_lite_interpreter(str(model_file))
        else:
            self.module = torch.jit.load(str(model_file), map_location="cpu")


class TorchExportSession(_TorchModuleSession):
    """A saved torch.export program (.pt2), numpy in and out."""

    def __init__(self, model_file: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True):
        import torch

        self.module = torch.export.load(str(model_file)).module()


class OpenVinoSession:
    """An ONNX file compiled by OpenVINO for the CPU (fp32 inference precision, so it agrees with
    the parity gate's reference; latency hint: one request at a time), numpy in and out."""

    def __init__(self, model_file: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True):
        import openvino as ov

        if device == "cuda":
            raise TiffinError("device cuda: OpenVINO runs here on the CPU; use --runtime onnxruntime for CUDA")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.model = ov.Core().compile_model(str(model_file), "CPU", config)
        self.request = self.model.create_infer_request()

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        """The first output for inputs given in the graph's input order."""
        result = self.request.infer([np.ascontiguousarray(x) for x in inputs])
        return np.array(result[self.model.output(0)])  # a copy: the request reuses its output buffer


def _onnx(model_file: str | Path, device: str = "auto", threads: int | None = None, spinning: bool = True):
    from tiffin.onnx_session import OnnxSession

    return OnnxSession(model_file, device, threads, spinning)


@dataclass(frozen=True)
class Runtime:
    name: str
    format: str  # the artifact format it runs
    torch_free: bool  # whether serving (no torch installed) can run it
    open: Callable[..., Callable[..., np.ndarray]]  # (model_file, device, threads, spinning) -> session
    install: str  # the pip extra that brings it
    module: str  # the package it imports (whether it is installed here)

    @property
    def installed(self) -> bool:
        import importlib.util

        return importlib.util.find_spec(self.module) is not None


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in [
        Runtime("onnxruntime", "onnx", True, _onnx, "tiffin[cpu] (or tiffin[gpu])", "onnxruntime"),
        Runtime("openvino", "onnx", True, OpenVinoSession, "tiffin[openvino]", "openvino"),
        Runtime("torchscript", "torchscript", False, TorchScriptSession, "tiffin[train]", "torch"),
        Runtime("torch-lite", "mobile", False, TorchScriptSession, "tiffin[train]", "torch"),
        Runtime("torch-export", "pt2", False, TorchExportSession, "tiffin[train]", "torch"),
    ]
}


def runtime_for(format: str, name: str | None = None) -> Runtime:
    """The runtime `name` (it must run `format`), else the default runtime of `format`.

    Raises:
        TiffinError: an unknown runtime, or one that does not run this format.
    """
    if name is not None:
        runtime = RUNTIMES.get(name)
        if runtime is None:
            raise TiffinError(f"--runtime {name}: choose one of {', '.join(RUNTIMES)}")
        if runtime.format != format:
            others = ", ".join(r.name for r in runtimes_for(format))
            raise TiffinError(f"--runtime {name}: runs {runtime.format} artifacts, this one is {format} (use {others})")
        return runtime
    for runtime in RUNTIMES.values():
        if runtime.format == format:
            return runtime
    raise TiffinError(f"format {format!r}: no runtime runs it (known: {', '.join(r.format for r in RUNTIMES.values())})")


def runtimes_for(format: str) -> list[Runtime]:
    """Every runtime of the table that runs `format`, the default first."""
    return [r for r in RUNTIMES.values() if r.format == format]


class FixedBatch:
    """A session whose graph has a fixed batch size, called with any batch: split into pieces of
    that size, the last one padded with copies of its first item, outputs cut back."""

    def __init__(self, session: Callable[..., np.ndarray], batch_size: int):
        self.session, self.batch_size = session, batch_size

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        n, size = len(inputs[0]), self.batch_size
        if n == size:
            return self.session(*inputs)
        outputs = []
        for start in range(0, n, size):
            piece = [x[start : start + size] for x in inputs]
            short = size - len(piece[0])
            if short:
                piece = [np.concatenate([p, np.repeat(p[:1], short, axis=0)]) for p in piece]
            outputs.append(self.session(*piece)[: size - short])
        return np.concatenate(outputs)
