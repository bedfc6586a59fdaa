"""How many model processes and threads a worker runs, from the CPUs and memory it may use.

Several worker containers on one host each see all of the host's cores in
``os.cpu_count()``; their real share is the CPU affinity mask and the cgroup quota
(``docker run --cpus``, compose ``cpus:``, Kubernetes limits). Sizing from that share
keeps N containers from oversubscribing the cores. Each model process also holds
its own model and peaks at a few GiB while parsing, so the process count is capped
by the memory limit (cgroup ``memory.max``, else the machine's RAM): a 16-core host
with 8 GiB would otherwise start 16 processes and have them killed for memory.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common.settings import Settings

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


CGROUP_ROOT = Path("/sys/fs/cgroup")  # this process's cgroup, as a container sees it


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> Optional[float]:
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


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> Optional[int]:
    """Bytes allowed by the cgroup (v2 ``memory.max`` or v1 ``limit_in_bytes``), None if unlimited."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            limit = int(text)
        except ValueError:
            return None
        return None if limit >= 1 << 60 else limit  # v1 writes "unlimited" as a huge number
    return None


def usable_memory(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Bytes this process's cgroup may use: its limit, capped by the machine's RAM."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = cgroup_memory_limit(cgroup_root)
    return total if limit is None else min(total, limit)


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Whole CPUs this process may use: the affinity mask, capped by the cgroup quota."""
    cpus = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


# What the main worker process itself holds (Celery, torch and modelscope imported,
# no model): measured at about 420 MiB.
MAIN_PROCESS_MEMORY_MB = 512
MIB = 1024 * 1024


@dataclass(frozen=True)
class ResourcePlan:
    cpus: int
    memory_mb: int  # what the worker may use in all
    concurrency: int  # model-holding pool processes
    threads: int  # torch / OpenMP / MKL threads in each
    fits_memory: int  # model processes the memory holds at MODEL_PROCESS_MEMORY_MB each

    def describe(self) -> str:
        text = (f"{self.cpus} usable CPU(s), {self.memory_mb / 1024:.1f} GiB memory: "
                f"{self.concurrency} model process(es) x {self.threads} thread(s)")
        if self.concurrency > self.fits_memory:
            text += (f"; WARNING: the memory holds only {self.fits_memory} model process(es) at "
                     "MODEL_PROCESS_MEMORY_MB each, expect out-of-memory kills (lower WORKER_CONCURRENCY)")
        elif self.concurrency < self.cpus and self.concurrency == self.fits_memory:
            text += " (memory-bound: give the worker more memory for more processes)"
        return text


def plan_resources(settings: Settings, cpus: Optional[int] = None, memory: Optional[int] = None) -> ResourcePlan:
    """One single-threaded model process per CPU by default (see docs/deployment.md, "Scaling workers"):
    processes parallelise the whole job, threads only parts of the forward pass. Fewer
    processes, with more threads each, when the memory cannot hold one per CPU."""
    cpus = cpus or usable_cpus()
    memory_mb = (memory or usable_memory()) // MIB
    fits = max(1, (memory_mb - MAIN_PROCESS_MEMORY_MB) // settings.model_process_memory_mb)
    concurrency = settings.worker_concurrency or min(cpus, fits)
    threads = settings.torch_threads or max(1, cpus // concurrency)
    return ResourcePlan(cpus=cpus, memory_mb=memory_mb, concurrency=concurrency, threads=threads, fits_memory=fits)


def apply_thread_limits(plan: ResourcePlan) -> None:
    """Export the thread count for OpenMP/MKL/OpenBLAS; must run before torch is imported."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(plan.threads)
