"""Prometheus multiprocess bookkeeping, shared by the API (gunicorn) and the worker (Celery).

Both servers fork: gunicorn its request workers, Celery its model processes. A metric
counted in a child must reach the one process that answers the scrape, so both run
prometheus-client in multiprocess mode: every process writes its values to files in
one directory, and the scrape sums them (``MultiProcessCollector``).

prometheus-client picks its mode once, when it is first imported, from the
``PROMETHEUS_MULTIPROC_DIR`` variable. So each server calls :func:`use_metrics_dir` in
its first process before anything imports prometheus-client (this module imports it
only inside functions), and its forked children inherit the variable. Each server
needs a directory of its own: two servers writing one directory would report each
other's numbers, and each empties it at start.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_FILE_PID = re.compile(r"_(\d+)\.db$")


def use_metrics_dir(configured: Optional[Path], server: str) -> Path:
    """Point prometheus-client at ``configured`` (``PROMETHEUS_MULTIPROC_DIR``), or at a
    fresh temporary directory of this process, removed when it exits, so that ``make
    run`` and the tests need no configuration. Call it before prometheus-client is
    imported; it does not empty an existing directory (:func:`clear_metrics_dir` does)."""
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix=f"m2fp-{server}-metrics-"))
        owner = os.getpid()
        # Forked children run atexit handlers too (gunicorn's workers exit through
        # sys.exit); only the process that made the directory removes it.
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(path, ignore_errors=True))
    os.environ[MULTIPROC_VARIABLE] = str(path)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # Imported already, in single-process mode: Celery loads its command plugins before
        # the app, and Flower's imports prometheus-client. Metrics made from now on (ours)
        # write to the directory; without this the scrape reads an empty directory.
        values.ValueClass = values.get_value_class()
    return path


def clear_metrics_dir(path: Path, keep_pid: Optional[int] = None) -> None:
    """Remove the values an earlier run of this server left (a counter file of a dead
    process would otherwise be summed in forever); ``keep_pid``'s own files stay."""
    for entry in Path(path).glob("*.db"):
        match = _FILE_PID.search(entry.name)
        if not (keep_pid and match and int(match.group(1)) == keep_pid):
            entry.unlink(missing_ok=True)


def mark_process_dead(pid: int) -> None:
    """A child exited: its live gauges (e.g. "busy") stop counting; its counters stay."""
    from prometheus_client import multiprocess

    if MULTIPROC_VARIABLE in os.environ:
        multiprocess.mark_process_dead(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds the pid
        return True
    return True


class _DeadProcessSweep:
    """Runs first in every scrape: a process killed outright (SIGKILL, the out-of-memory
    killer) runs no exit hook, so its live gauges are dropped here once it is gone."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterable[Any]:
        for entry in self.path.glob("gauge_live*_*.db"):
            match = _FILE_PID.search(entry.name)
            if match and not _alive(int(match.group(1))):
                mark_process_dead(int(match.group(1)))
        return []


class _ThisProcess:
    """The metrics of this process alone (a process running without a metrics directory,
    such as an app built in a test or under ``flask run``)."""

    def collect(self) -> Iterable[Any]:
        from prometheus_client import REGISTRY

        return REGISTRY.collect()


def scrape_registry(*collectors: Any) -> Any:
    """A registry of every process's metrics (summed from the directory) plus
    ``collectors`` that read their values at scrape time (e.g. the queue depth)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROC_VARIABLE in os.environ:
        registry.register(_DeadProcessSweep(Path(os.environ[MULTIPROC_VARIABLE])))
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    for collector in collectors:
        registry.register(collector)
    return registry
