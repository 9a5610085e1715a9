"""The table of runtimes an artifact runs on: format -> how to open a session over its model file.

A session is called with numpy arrays in the graph's input order and returns the first output
as a numpy array, whatever runs it, so the host path (tiffin.host), the parity gate and the
benchmark treat every artifact alike. ONNX Runtime and OpenVINO are torch-free (serving uses
them; OpenVINO reads the same ONNX file, and on CPUs where ONNX Runtime lacks fast 3-D
convolution kernels it is the faster one; `openvino-bf16` is the same file computed in bf16 by
OpenVINO's precision hint, on CPUs with AMX or AVX-512 bf16, judged by bf16's parity
tolerances; `tensorrt` is ONNX Runtime's TensorRT provider on an NVIDIA GPU, fp16 allowed, not
yet measured by this project). TorchScript, the lite interpreter and torch.export need torch,
imported only when such an artifact is opened. The first row for a format is its default.

A runtime is one row: the CLIs' `--runtime` help, the services' TIFFIN_RUNTIME check and help,
and what a bento installs to run it are all read from here (`runtime_help`, `serving_runtimes`,
`names`, `Runtime.bento`); no other file lists runtime names (tests/test_layout.py adds a row).
"""

from __future__ import annotations

import functools
import os
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
    """A saved torch.export program (.pt2), numpy in and out.

    torch.export.load unpickles some payloads with `weights_only=False` (tensor-subclass weights
    and constants, the pre-2.8 archive layout) and has no safe mode of its own; PyTorch's
    TORCH_FORCE_WEIGHTS_ONLY_LOAD, set while it loads, makes every such torch.load weights-only,
    so a pickle that would run code is refused even in a trusted artifact. tiffin's own exports
    hold no pickles. The op graph itself is still a program: trust gates it (tiffin.trust)."""

    def __init__(self, model_file: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True):
        import pickle

        import torch

        before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # read by torch.load on every call
        try:
            self.module = torch.export.load(str(model_file)).module()
        except pickle.UnpicklingError as exc:
            raise TiffinError(f"{model_file}: holds a pickle that weights-only loading refuses "
                              f"({str(exc).splitlines()[-1][:200]}); tiffin does not unpickle code, "
                              "export the model again with tiffin export") from None
        finally:
            if before is None:
                os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
            else:
                os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


class OpenVinoSession:
    """An ONNX file compiled by OpenVINO for the CPU, numpy in and out. `precision` is OpenVINO's
    inference precision hint: f32 by default (it agrees with the parity gate's fp32 reference;
    OpenVINO's own default is bf16 on CPUs that have it), bf16 for the openvino-bf16 row, where
    oneDNN's AMX / AVX-512 bf16 kernels run the convolutions. Latency hint: one request at a time."""

    def __init__(self, model_file: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True, precision: str = "fp32"):
        import openvino as ov

        if device == "cuda":
            raise TiffinError("device cuda: OpenVINO runs here on the CPU; use --runtime onnxruntime for CUDA")
        reason = _needs_bf16() if precision == "bf16" else None
        if reason:
            raise TiffinError(f"runtime openvino-{precision}: {reason}")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.model = ov.Core().compile_model(str(model_file), "CPU", config)
        except RuntimeError as err:  # e.g. the bf16 hint on an int8 (QDQ) graph: oneDNN has no kernel for it
            lines = [x for x in str(err).splitlines() if x.strip() and not x.startswith(("Exception from", "Check '"))]
            name = "openvino" if precision == "fp32" else f"openvino-{precision}"
            others = "onnxruntime" if name == "openvino" else "onnxruntime or openvino"
            raise TiffinError(f"runtime {name}: OpenVINO could not compile {model_file} for the CPU "
                              f"({(lines or ['no reason given'])[0].strip()}); use --runtime {others}") from None
        self.request = self.model.create_infer_request()

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        """The first output for inputs given in the graph's input order."""
        result = self.request.infer([np.ascontiguousarray(x) for x in inputs])
        return np.array(result[self.model.output(0)])  # a copy: the request reuses its output buffer


def _needs_bf16() -> str | None:
    """Why bf16 cannot run in hardware on this CPU, else None."""
    from tiffin.cpu import has_bf16

    if has_bf16():
        return None
    return "this CPU has no bf16 instructions (AVX-512 bf16 or AMX); use --runtime openvino (fp32)"


def _needs_openvino() -> str | None:
    """Why OpenVINO cannot run here (it is an extra: tiffin[cpu] alone has ONNX Runtime), else None."""
    import importlib.util

    return None if importlib.util.find_spec("openvino") else "OpenVINO is not installed: pip install 'tiffin[openvino]'"


def _onnx(model_file: str | Path, device: str = "auto", threads: int | None = None, spinning: bool = True):
    from tiffin.onnx_session import OnnxSession

    return OnnxSession(model_file, device, threads, spinning)


def _tensorrt(model_file: str | Path, device: str = "auto", threads: int | None = None, spinning: bool = True):
    """ONNX Runtime with its TensorRT provider (fp16 allowed). Not measured by this project: no
    GPU was lent to it (BENCHMARKS.md, GPU)."""
    from tiffin.onnx_session import OnnxSession, tensorrt_missing, tensorrt_providers

    if device == "cpu":
        raise TiffinError("runtime tensorrt: runs on an NVIDIA GPU; use --runtime onnxruntime or openvino on the CPU")
    reason = tensorrt_missing()
    if reason:
        raise TiffinError(f"runtime tensorrt: {reason}; use --runtime onnxruntime")
    session = OnnxSession(model_file, device, threads, spinning, providers=tensorrt_providers())
    if session.providers[0] != "TensorrtExecutionProvider":  # ONNX Runtime falls back quietly
        raise TiffinError("runtime tensorrt: ONNX Runtime could not load TensorRT's libraries (libnvinfer); "
                          "install the TensorRT build onnxruntime-gpu was made with, or use --runtime onnxruntime")
    return session


def _needs_tensorrt() -> str | None:
    from tiffin.onnx_session import tensorrt_missing

    return tensorrt_missing()


@dataclass(frozen=True)
class Runtime:
    name: str
    format: str  # the artifact format it runs
    torch_free: bool  # whether serving (no torch installed) can run it
    open: Callable[..., Callable[..., np.ndarray]]  # (model_file, device, threads, spinning) -> session
    install: str  # the pip extra that brings it
    module: str  # the package it imports (whether it is installed here)
    # the precision it computes in when not the file's own (OpenVINO's bf16 hint on an fp32 file):
    # the parity gate judges it by the looser of the two precisions' tolerances
    computes: str | None = None
    needs: Callable[[], str | None] = lambda: None  # why this machine cannot run it, else None
    fallback: str | None = None  # the row a recorded choice falls back to where `needs` says no
    device: str = "cpu"  # where it computes ("cuda": an NVIDIA GPU)
    # whether opening the file runs its maker's code (TorchScript, .pt2): it loads only when
    # trusted (tiffin.trust); ONNX files are data, run by an interpreter of a fixed op set
    program: bool = False
    # what a bento installs to run it (the distribution, pinned at the version installed here), in
    # place of the default ONNX row's package that the bentofile lists; None: bentos do not bundle it
    bento: str | None = None

    @property
    def installed(self) -> bool:
        import importlib.util

        return importlib.util.find_spec(self.module) is not None


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in [
        Runtime("onnxruntime", "onnx", True, _onnx, "tiffin[cpu] (or tiffin[gpu])", "onnxruntime",
                bento="onnxruntime"),
        # a recorded OpenVINO choice (`tiffin benchmark --record`) opened where OpenVINO is not
        # installed runs the same ONNX file on ONNX Runtime, with a warning
        Runtime("openvino", "onnx", True, OpenVinoSession, "tiffin[openvino]", "openvino", needs=_needs_openvino,
                fallback="onnxruntime", bento="openvino"),
        Runtime("openvino-bf16", "onnx", True, functools.partial(OpenVinoSession, precision="bf16"),
                "tiffin[openvino]", "openvino", computes="bf16", needs=lambda: _needs_openvino() or _needs_bf16(),
                fallback="openvino", bento="openvino"),
        # TensorRT's libraries are not what onnxruntime-gpu's pip extras bring: bentos do not bundle it yet
        Runtime("tensorrt", "onnx", True, _tensorrt, "tiffin[gpu] and TensorRT's libraries", "onnxruntime",
                computes="fp16", needs=_needs_tensorrt, fallback="onnxruntime", device="cuda"),
        Runtime("torchscript", "torchscript", False, TorchScriptSession, "tiffin[train]", "torch", program=True),
        Runtime("torch-lite", "mobile", False, TorchScriptSession, "tiffin[train]", "torch", program=True),
        Runtime("torch-export", "pt2", False, TorchExportSession, "tiffin[train]", "torch", program=True),
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


def names(runtimes: list[Runtime] | None = None, last: str = " or ") -> str:
    """The runtimes' names as a phrase, "a, b, c or d" [default: every row of the table]."""
    found = [r.name for r in (RUNTIMES.values() if runtimes is None else runtimes)]
    return ", ".join(found[:-1]) + last + found[-1] if len(found) > 1 else "".join(found)


def serving_runtimes() -> list[Runtime]:
    """The rows serving runs on (no torch installed): TIFFIN_RUNTIME takes these."""
    return [r for r in RUNTIMES.values() if r.torch_free]


def runtime_help() -> str:
    """Every runtime by the format it runs, for `--runtime`'s help: "a, b or c for onnx; d for torchscript; ..."."""
    formats = dict.fromkeys(r.format for r in RUNTIMES.values())
    return "; ".join(f"{names(runtimes_for(f))} for {f}" for f in formats)


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
