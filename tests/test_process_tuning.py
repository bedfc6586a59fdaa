"""Process tuning: what is set on which CPU, what the operator can override, and that
glibc really keeps freed memory when told to."""
import subprocess
import sys

import pytest

from scripts.processes import REPO
from worker.process_tuning import MKL_VARIABLE, apply_process_tuning, cpu_flags, cpu_vendor


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Unset for the test, and restored after it (set first, so monkeypatch records them)."""
    for name in (MKL_VARIABLE, "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_mkl_is_told_to_use_avx2_on_amd_only(monkeypatch):
    import os

    tuning = apply_process_tuning(keep_freed=False, mkl_avx2_on_amd=True, vendor="GenuineIntel")
    assert MKL_VARIABLE not in os.environ and "GenuineIntel" in tuning.mkl
    tuning = apply_process_tuning(keep_freed=False, mkl_avx2_on_amd=False, vendor="AuthenticAMD")
    assert MKL_VARIABLE not in os.environ and "MKL_AVX2_ON_AMD=false" in tuning.mkl
    tuning = apply_process_tuning(keep_freed=False, mkl_avx2_on_amd=True, vendor="AuthenticAMD")
    assert os.environ[MKL_VARIABLE] == "5" and "AMD" in tuning.mkl


def test_operator_settings_are_left_alone(monkeypatch):
    import os

    monkeypatch.setenv(MKL_VARIABLE, "4")
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    tuning = apply_process_tuning(keep_freed=True, mkl_avx2_on_amd=True, vendor="AuthenticAMD")
    assert os.environ[MKL_VARIABLE] == "4" and "as set in the environment" in tuning.mkl
    assert "MALLOC_MMAP_MAX_" in tuning.malloc and "as set in the environment" in tuning.malloc


def test_unrelated_glibc_tunables_do_not_turn_the_malloc_setting_off(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
    assert "as set in the environment" not in apply_process_tuning(False, False, vendor="x").malloc
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000")
    assert "GLIBC_TUNABLES" in apply_process_tuning(False, False, vendor="x").malloc


def test_cpu_description_is_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu_vendor(cpuinfo) == "AuthenticAMD" and {"avx512f", "avx512_bf16"} <= cpu_flags(cpuinfo)
    assert cpu_vendor(tmp_path / "missing") == "unknown" and cpu_flags(tmp_path / "missing") == set()


RESIDENT_AFTER_FREE = """
import sys
from worker.process_tuning import apply_process_tuning
print(apply_process_tuning(keep_freed=sys.argv[1] == "keep", mkl_avx2_on_amd=False).malloc, file=sys.stderr)
import numpy as np

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

before = resident_mib()
block = np.ones(64 * 2**20)  # 512 MiB, touched
del block
print(resident_mib() - before)
"""


def resident_growth(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", RESIDENT_AFTER_FREE, mode], cwd=REPO, capture_output=True,
                          text=True, check=True)
    return float(done.stdout)


def test_keeping_freed_memory_keeps_it_resident_instead_of_unmapping_it():
    assert resident_growth("default") < 64  # glibc unmapped the freed block
    assert resident_growth("keep") > 448  # kept for the next photo's tensors
