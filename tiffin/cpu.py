"""What this CPU can do, read from /proc/cpuinfo (torch-free: the services ask it too).

Which precision and runtime win depends on these instruction sets: bf16 without AVX-512 bf16
or AMX is emulated (several times slower than fp32), and OpenVINO's bf16 precision hint needs them.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

CPU_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
             "avx512_bf16": "AVX-512 bf16", "amx_bf16": "AMX bf16", "amx_int8": "AMX int8"}
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


@functools.cache
def _cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def _field(info: str, name: str) -> str | None:
    return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith(name)), None)


def cpu_flags() -> frozenset[str] | None:
    """The flags of this CPU, None where /proc/cpuinfo cannot be read (not Linux)."""
    info = _cpuinfo()
    return None if info is None else frozenset((_field(info, "flags") or "").split())


def _x86_has(wanted: set[str]) -> bool | None:
    """Whether this x86 CPU has any of `wanted`; None where that cannot be told."""
    flags = cpu_flags()
    if flags is None or platform.machine() not in ("x86_64", "AMD64"):
        return None
    return bool(flags & wanted)


def has_bf16() -> bool | None:
    """Whether this x86 CPU computes bf16 in hardware; None where that cannot be told."""
    return _x86_has(BF16_FLAGS)


def has_vnni() -> bool | None:
    """Whether this x86 CPU has int8 dot-product instructions (VNNI or AMX int8); None where that
    cannot be told. Without them ONNX Runtime's u8 x s8 kernels can saturate (its quantisation
    docs: use reduce_range there)."""
    return _x86_has(VNNI_FLAGS)


def precision_warning(precision: str) -> str | None:
    """A line saying `precision` has no hardware support on this CPU (x86 Linux), else None."""
    if precision != "bf16" or has_bf16() is not False:
        return None
    return ("this CPU has no bf16 instructions (AVX-512 bf16 or AMX): bf16 runs emulated, several times slower "
            "than fp32, in the parity gate's checks and in the artifact; fp32 is the faster choice here "
            "(tiffin benchmark measures both)")


def cpu_features() -> str:
    """This CPU's model and the instruction sets that decide which precision and runtime win (Linux)."""
    flags = cpu_flags()
    if flags is None:
        return "unknown (no /proc/cpuinfo)"
    model = _field(_cpuinfo() or "", "model name") or "?"
    have = [name for flag, name in CPU_FLAGS.items() if flag in flags]
    return f"{model}; {', '.join(have) if have else 'none of ' + ', '.join(CPU_FLAGS.values())}"
