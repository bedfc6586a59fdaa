"""What a worker process holds for its lifetime: settings, store, job records, engine."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from common.jobs import JobStore, redis_client
from common.settings import Settings
from common.storage import Storage, create_storage
from worker.engine import ParsingEngine


@dataclass
class WorkerContext:
    settings: Settings
    storage: Storage
    jobs: JobStore
    engine: ParsingEngine

    @classmethod
    def create(cls, settings: Settings, engine: ParsingEngine) -> "WorkerContext":
        return cls(
            settings=settings,
            storage=create_storage(settings),
            jobs=JobStore(redis_client(settings.redis_url), settings.job_ttl_seconds),
            engine=engine,
        )


_current: Optional[WorkerContext] = None


def set_context(context: Optional[WorkerContext]) -> None:
    """Install the process's context (at worker process start; tests may set their own)."""
    global _current
    _current = context


def get_context() -> WorkerContext:
    if _current is None:
        raise RuntimeError("worker context not initialised: the model did not load at start-up")
    return _current
