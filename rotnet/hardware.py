"""What this machine computes natively, and the facts about it that a run records.

bf16 pays only where the hardware has bf16 arithmetic: a CUDA GPU with bf16 support, or a
CPU with AVX512_BF16 or AMX whose oneDNN kernels are allowed to use them. Elsewhere (an
AVX2-only CPU, or a bf16 CPU capped with ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY) bf16
is emulated and 20x or more slower than fp32, so `precision: auto` must resolve to fp32.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache

import torch

from rotnet.config import PRECISIONS
from rotnet.errors import RotnetError

# The /proc/cpuinfo flags that decide which precision is fast; printed by the benchmark.
RELEVANT_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "cpu"


def cpu_flags() -> list[str]:
    """Which of RELEVANT_CPU_FLAGS the CPU reports (Linux; empty elsewhere)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in RELEVANT_CPU_FLAGS if f in flags]


def _onednn_isa_allows_bf16() -> bool:
    """False when ONEDNN_MAX_CPU_ISA caps oneDNN below its bf16 / AMX instruction sets."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return isa in ("ALL", "DEFAULT") or "BF16" in isa or "AMX" in isa


def cpu_has_bf16_instructions() -> bool:
    """AVX512_BF16 or AMX in the hardware (cpuinfo; no environment variable changes it)."""
    return (getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
            or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def cpu_kernels_allow_bf16() -> bool:
    """oneDNN's bf16 check (follows ONEDNN_MAX_CPU_ISA, but also says yes for plain AVX-512,
    which emulates bf16), its ISA cap, and ATen's kernels (ATEN_CPU_CAPABILITY) still AVX-512."""
    return (torch.ops.mkldnn._is_mkldnn_bf16_supported() and _onednn_isa_allows_bf16()
            and torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512"))


def cpu_native_bf16() -> bool:
    """True when bf16 convolutions and matmuls on this CPU run on bf16 instructions."""
    return cpu_has_bf16_instructions() and cpu_kernels_allow_bf16()


def cuda_native_bf16(device: torch.device) -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        supported = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # an older torch without the argument
        supported = torch.cuda.is_bf16_supported()
    return supported and torch.cuda.get_device_capability(device)[0] >= 8


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return cuda_native_bf16(device)
    if device.type == "cpu":
        return cpu_native_bf16()
    return False


def resolve_precision(requested: str, device: torch.device, native: bool | None = None) -> str:
    """`auto` → bf16 where `device` computes it natively, else fp32. An explicit bf16 on a
    device that would emulate it is honoured, with a one-line warning on stderr."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    native = native_bf16(device) if native is None else native
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        print(f"warning: {device.type} has no native bf16 here ({device_name(device)}); bf16 is "
              f"emulated and may be 20x slower than fp32 (runtime.precision=auto picks fp32)",
              file=sys.stderr)
    return requested


def resolve_device(name: str) -> torch.device:
    """`auto` → the GPU where there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def describe(device: torch.device) -> dict:
    """The machine a run ran on, as recorded with it (strings and numbers only)."""
    facts = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
             "threads": torch.get_num_threads(), "native_bf16": native_bf16(device)}
    if device.type == "cpu":
        facts["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        facts["cpu_flags"] = " ".join(cpu_flags())
    elif device.type == "cuda":
        facts["cuda"] = torch.version.cuda or ""
    return facts


def check_device_available(name: str) -> None:
    """A one-line RotnetError, before anything is written, for a device this machine lacks."""
    device = torch.device("cpu" if name == "auto" else name)
    if device.type != "cuda":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = device.index or 0
    if index >= count:
        raise RotnetError(f"device {device} is not available on this machine ({count} CUDA "
                          "device(s)); use --device cpu or auto")
