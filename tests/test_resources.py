"""Sizing workers from the CPUs they may use (affinity, cgroup v1/v2 quota)."""
import os

from common.settings import Settings
from worker.resources import apply_thread_limits, cgroup_cpu_limit, plan_cpus, usable_cpus


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


def test_usable_cpus_never_exceeds_the_affinity_mask():
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_plan_defaults_to_one_single_threaded_process_per_cpu():
    plan = plan_cpus(Settings(), cpus=4)
    assert (plan.concurrency, plan.threads) == (4, 1)
    assert "4 model process(es) x 1 thread(s)" in plan.describe()


def test_plan_overrides():
    assert plan_cpus(Settings(worker_concurrency=2), cpus=8).threads == 4
    assert plan_cpus(Settings(worker_concurrency=1), cpus=2).threads == 2
    plan = plan_cpus(Settings(worker_concurrency=3, torch_threads=5), cpus=2)
    assert (plan.concurrency, plan.threads) == (3, 5)


def test_thread_limits_are_exported_for_openmp_mkl_and_openblas(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    apply_thread_limits(plan_cpus(Settings(worker_concurrency=1), cpus=3))
    assert [os.environ[n] for n in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")] == ["3"] * 3
