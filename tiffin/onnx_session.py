"""ONNX Runtime sessions as tiffin opens them: CUDA when the GPU build and a GPU are there, else CPU.

Torch-free (numpy in, numpy out): serving and the export parity check run artifacts through the
same session settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tiffin.errors import TiffinError

DEVICES = ("auto", "cpu", "cuda")


def providers_for(device: str) -> list[str]:
    """Execution providers for `device`: auto takes CUDA when onnxruntime-gpu is installed and the
    NVIDIA driver is there (a GPU host, or a container run with --gpus)."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise TiffinError(f"device {device!r}: choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise TiffinError("device cuda: this onnxruntime has no CUDA provider; install the gpu extra "
                          "(onnxruntime-gpu) or use device cpu")
    if device == "cpu" or "CUDAExecutionProvider" not in available:
        return ["CPUExecutionProvider"]
    if not cuda_driver():
        if device == "cuda":
            raise TiffinError("device cuda: no NVIDIA driver here (libcuda); on a GPU host run the container with "
                              "--gpus all, or use device cpu")
        return ["CPUExecutionProvider"]  # onnxruntime-gpu on a host without a GPU: CPU, without its error log
    _preload_cuda_libraries(ort)
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def cuda_driver() -> bool:
    """Whether the NVIDIA driver's library loads (it is the host's: absent without a GPU)."""
    import ctypes
    import sys

    try:
        ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return False
    return True


_preloaded = False


def _preload_cuda_libraries(ort) -> None:
    """Load CUDA and cuDNN from the nvidia-* pip packages (onnxruntime-gpu[cuda,cudnn], what a
    `tiffin build --gpu` bento installs): they are not on the loader's path, and without this the
    CUDA provider failed to load (libcublasLt.so.13 not found) and ran on the CPU."""
    global _preloaded
    if not _preloaded and hasattr(ort, "preload_dlls"):  # onnxruntime >= 1.21
        ort.preload_dlls()
        _preloaded = True


def tensorrt_providers() -> list:
    """TensorRT first (fp16 kernels allowed, engines cached: a first build takes minutes), CUDA
    for the nodes TensorRT does not take, then the CPU."""
    import os

    import onnxruntime as ort

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tiffin" / "tensorrt"
    cache.mkdir(parents=True, exist_ok=True)
    _preload_cuda_libraries(ort)
    return [("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                           "trt_engine_cache_path": str(cache)}),
            "CUDAExecutionProvider", "CPUExecutionProvider"]


def tensorrt_missing() -> str | None:
    """Why ONNX Runtime's TensorRT provider cannot run here, else None."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return "ONNX Runtime is not installed: pip install 'tiffin[gpu]'"
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no TensorRT provider: pip install 'tiffin[gpu]' on an NVIDIA GPU machine"
    if not cuda_driver():
        return "no NVIDIA driver here (libcuda): TensorRT runs on an NVIDIA GPU"
    return None


class OnnxSession:
    """One ONNX Runtime session over a model file, called with numpy arrays in input order;
    `providers` replaces the ones `device` picks (the tensorrt row)."""

    def __init__(self, model_file: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True, providers: list | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            # one session per worker: its intra-op pool is the worker's share of the cores
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # ONNX Runtime's pool threads spin for a while after each run waiting for more work: good
        # when the model has the cores to itself, theft when a server decodes the next request
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(model_file), options, providers=providers or providers_for(device))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.run_options = None

    def return_memory_after_runs(self) -> None:
        """Give the memory arena's unused chunks back after every run (serving): ONNX Runtime keeps
        the largest batch's buffers otherwise, so one long request set a worker's size for good."""
        import onnxruntime as ort

        self.run_options = ort.RunOptions()
        devices = "cpu:0" + (";gpu:0" if "CUDAExecutionProvider" in self.providers else "")
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", devices)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        """The first output for inputs given in the graph's input order."""
        return self.session.run(None, dict(zip(self.input_names, inputs)), self.run_options)[0]
