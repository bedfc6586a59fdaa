"""Process settings that speed up every engine, applied before torch or OpenVINO loads.

Two faults of the environment, not of the model, cost the torch path about half its
time on this project's machines (docs/performance.md, re-measured by ``make bench``):

- glibc's malloc hands every large tensor back to the kernel when it is freed and maps
  it again for the next photo: over a million page faults and several CPU-seconds of
  system time per photo. Telling it to keep freed memory (no mmap'd chunks, no trimming)
  removes that, for some extra resident memory (docs/performance.md).
- The MKL bundled in torch 1.13 picks a slow code path on AMD CPUs unless
  ``MKL_DEBUG_CPU_TYPE=5`` asks for its AVX2 kernels (an undocumented switch that this
  MKL version still reads, once, when it loads).

Both are overridable (``MALLOC_KEEP_FREED=false``, ``MKL_AVX2_ON_AMD=false``), and left
alone when the operator set the underlying variables. The Celery pool processes are
forks of the main worker process, so what is set here holds in them too.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes an int: the largest trim threshold it can set (2 GiB).
KEEP_TRIM_THRESHOLD = 2**31 - 1
MALLOC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
MKL_VARIABLE = "MKL_DEBUG_CPU_TYPE"


@dataclass(frozen=True)
class ProcessTuning:
    malloc: str  # what was done about malloc, in words
    mkl: str

    def describe(self) -> str:
        return f"malloc: {self.malloc}; MKL: {self.mkl}"


def _cpuinfo_field(name: str, cpuinfo: Path) -> str:
    """The first CPU's ``name`` line of /proc/cpuinfo ("" when unreadable)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU maker's id: GenuineIntel, AuthenticAMD, ..."""
    return _cpuinfo_field("vendor_id", cpuinfo) or "unknown"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """Instruction-set flags of the CPU (avx512_bf16, amx_bf16, ...)."""
    return set(_cpuinfo_field("flags", cpuinfo).split())


# Either flag lets OpenVINO run bf16 arithmetic natively (M2FP_PRECISION=mixed or bf16).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    return bool(BF16_CPU_FLAGS & cpu_flags(cpuinfo))


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory mapped (``M_MMAP_MAX=0``, high ``M_TRIM_THRESHOLD``)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc (musl has no mallopt)
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD))


def apply_process_tuning(keep_freed: bool, mkl_avx2_on_amd: bool, vendor: str | None = None) -> ProcessTuning:
    """Apply the settings to this process; call before torch is imported."""
    operator_set = [name for name in MALLOC_VARIABLES if os.environ.get(name)]
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.mmap_max" in tunables or "glibc.malloc.trim_threshold" in tunables:
        operator_set.append("GLIBC_TUNABLES")
    if operator_set:
        malloc = f"as set in the environment ({', '.join(operator_set)})"
    elif not keep_freed:
        malloc = "glibc defaults (MALLOC_KEEP_FREED=false)"
    elif keep_freed_memory():
        malloc = "keeps freed memory (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)"
    else:
        malloc = "defaults (this C library has no mallopt)"

    vendor = vendor or cpu_vendor()
    if os.environ.get(MKL_VARIABLE):
        mkl = f"{MKL_VARIABLE}={os.environ[MKL_VARIABLE]} as set in the environment"
    elif vendor != "AuthenticAMD":
        mkl = f"default dispatch ({vendor} CPU)"
    elif not mkl_avx2_on_amd:
        mkl = "default dispatch (MKL_AVX2_ON_AMD=false)"
    else:
        os.environ[MKL_VARIABLE] = "5"
        mkl = f"{MKL_VARIABLE}=5 (AVX2 kernels on this AMD CPU)"
    return ProcessTuning(malloc=malloc, mkl=mkl)
