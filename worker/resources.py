"""How many model processes and threads a worker runs, from the CPUs it may use.

Several worker containers on one host each see all of the host's cores in
``os.cpu_count()``; their real share is the CPU affinity mask and the cgroup quota
(``docker run --cpus``, compose ``cpus:``, Kubernetes limits). Sizing from that share
keeps N containers from oversubscribing the cores.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common.settings import Settings

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> Optional[float]:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 CFS files), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """Whole CPUs this process may use: the affinity mask, capped by the cgroup quota."""
    cpus = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


@dataclass(frozen=True)
class CpuPlan:
    cpus: int
    concurrency: int  # model-holding pool processes
    threads: int  # torch / OpenMP / MKL threads in each

    def describe(self) -> str:
        return (f"{self.cpus} usable CPU(s): {self.concurrency} model process(es) x "
                f"{self.threads} thread(s)")


def plan_cpus(settings: Settings, cpus: Optional[int] = None) -> CpuPlan:
    """One single-threaded model process per CPU by default (see README, "Scaling"):
    processes parallelise the whole job, threads only parts of the forward pass."""
    cpus = cpus or usable_cpus()
    concurrency = settings.worker_concurrency or cpus
    threads = settings.torch_threads or max(1, cpus // concurrency)
    return CpuPlan(cpus=cpus, concurrency=concurrency, threads=threads)


def apply_thread_limits(plan: CpuPlan) -> None:
    """Export the thread count for OpenMP/MKL/OpenBLAS; must run before torch is imported."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(plan.threads)
