"""What a worker's pool process holds for its lifetime: the services and the loaded engine.

Set once per process at start-up (:mod:`worker.startup`), after the engine loaded;
the Celery task reads it for every job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from common.services import Services
from worker.engine import ParsingEngine


@dataclass(frozen=True)
class WorkerProcess:
    services: Services
    engine: ParsingEngine


_current: Optional[WorkerProcess] = None


def set_process(process: Optional[WorkerProcess]) -> None:
    """Install this process's services and engine (at pool-process start)."""
    global _current
    _current = process


def current_process() -> WorkerProcess:
    if _current is None:
        raise RuntimeError("worker process not initialised: the model did not load at start-up")
    return _current
