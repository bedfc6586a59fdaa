"""Sizing workers from the CPUs and memory they may use (affinity, cgroup v1/v2 limits)."""
import os
import subprocess
import sys

from common.settings import PROCESS_MEMORY_MB, Settings
from scripts.processes import REPO
from worker.resources import (MIB, apply_thread_limits, cgroup_cpu_limit, cgroup_memory_limit, plan_resources,
                              usable_cpus, usable_memory)

GIB = 1024 * MIB


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "nothing-here") is None


def test_usable_cpus_follow_the_affinity_mask_and_the_quota_below_it(tmp_path):
    # In a child process pinned to one CPU (what `taskset` or a cpuset does to a worker).
    one_cpu = subprocess.run([sys.executable, "-c", (
        "import os; from pathlib import Path; from worker.resources import usable_cpus; "
        f"os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}}); print(usable_cpus(Path({str(tmp_path)!r})))")],
        cwd=REPO, capture_output=True, text=True, check=True)
    assert one_cpu.stdout.split() == ["1"], one_cpu.stderr
    mask = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == mask  # no quota file: the mask
    (tmp_path / "cpu.max").write_text(f"{(mask + 4) * 100000} 100000\n")
    assert usable_cpus(tmp_path) == mask  # a quota above the mask does not add CPUs
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(tmp_path) == 1  # half a CPU: one process, never zero
    (tmp_path / "cpu.max").write_text("190000 100000\n")
    assert usable_cpus(tmp_path) == 1  # 1.9 CPUs round down


def test_cgroup_memory_limits(tmp_path):
    (tmp_path / "memory.max").write_text("8589934592\n")
    assert cgroup_memory_limit(tmp_path) == 8 * GIB
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("4294967296")
    assert cgroup_memory_limit(v1) == 4 * GIB
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")  # v1's "unlimited"
    assert cgroup_memory_limit(v1) is None
    assert cgroup_memory_limit(tmp_path / "nothing-here") is None


def test_usable_memory_is_the_cgroup_limit_capped_by_the_machines_ram(tmp_path):
    ram = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    assert usable_memory(tmp_path) == ram  # no limit file
    (tmp_path / "memory.max").write_text(f"{ram // 4}\n")
    assert usable_memory(tmp_path) == ram // 4
    (tmp_path / "memory.max").write_text(f"{ram * 4}\n")
    assert usable_memory(tmp_path) == ram  # a limit above the RAM gives no more
    (tmp_path / "memory.max").write_text("max\n")
    assert usable_memory(tmp_path) == ram


def test_plan_defaults_to_one_single_threaded_process_per_cpu():
    plan = plan_resources(Settings(), cpus=4, memory=64 * GIB)
    assert (plan.concurrency, plan.threads) == (4, 1)
    assert "4 usable CPU(s), 64.0 GiB memory: 4 model process(es) x 1 thread(s)" == plan.describe()


def test_plan_fits_the_memory_with_fewer_processes_and_more_threads():
    plan = plan_resources(Settings(), cpus=16, memory=8 * GIB)  # (8192 - 512) // 3300 = 2
    assert (plan.concurrency, plan.threads) == (2, 8)
    assert "memory-bound" in plan.describe()
    assert plan_resources(Settings(), cpus=4, memory=2 * GIB).concurrency == 1  # never zero
    assert plan_resources(Settings(model_process_memory_mb=1000), cpus=16, memory=8 * GIB).concurrency == 7


def test_the_memory_budget_per_process_follows_the_engine_unless_set():
    assert Settings().model_process_memory_mb == PROCESS_MEMORY_MB["openvino"]
    assert Settings(m2fp_engine="torch").model_process_memory_mb == PROCESS_MEMORY_MB["torch"]
    assert Settings(m2fp_engine="torch", model_process_memory_mb=3000).model_process_memory_mb == 3000
    assert Settings(m2fp_precision="mixed").model_process_memory_mb == PROCESS_MEMORY_MB["openvino-mixed"]
    fits = [plan_resources(Settings(m2fp_engine=engine, m2fp_precision=precision), cpus=16, memory=16 * GIB).concurrency
            for engine, precision in (("auto", "fp32"), ("auto", "mixed"), ("torch", "fp32"))]
    assert fits == [4, 4, 2]  # (16384 - 512) MiB at 3300 MiB (OpenVINO), 3900 (mixed) or 6000 (torch) each


def test_an_override_beyond_the_memory_is_kept_but_warned_about():
    plan = plan_resources(Settings(worker_concurrency=4), cpus=4, memory=8 * GIB)
    assert plan.concurrency == 4
    assert "WARNING" in plan.describe() and "holds only 2 model process(es)" in plan.describe()


def test_plan_overrides():
    assert plan_resources(Settings(worker_concurrency=2), cpus=8, memory=64 * GIB).threads == 4
    assert plan_resources(Settings(worker_concurrency=1), cpus=2, memory=64 * GIB).threads == 2
    plan = plan_resources(Settings(worker_concurrency=3, torch_threads=5), cpus=2, memory=64 * GIB)
    assert (plan.concurrency, plan.threads) == (3, 5)


def test_thread_limits_are_exported_for_openmp_mkl_and_openblas(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    apply_thread_limits(plan_resources(Settings(worker_concurrency=1), cpus=3, memory=64 * GIB))
    assert [os.environ[n] for n in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")] == ["3"] * 3
