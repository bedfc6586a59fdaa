"""Queues for in-process API tests, behind the production :class:`JobQueue` interface:
one records what would have been sent, one fails as a down broker does."""
from __future__ import annotations

from typing import Callable

import kombu.exceptions

from common.queue import JobQueue
from m2fp_contract.schema import Priority


class RecordingQueue(JobQueue):
    """Keeps the real bookkeeping in Redis (depths, places), but hands each message to
    ``record`` instead of Celery."""

    def __init__(self, queue: JobQueue, record: Callable[[str, Priority], None]) -> None:
        super().__init__(queue.settings, queue.client)
        self.record = record

    def send(self, job_id: str, priority: Priority) -> None:
        self.record(job_id, priority)


class DownQueue(RecordingQueue):
    def __init__(self, queue: JobQueue) -> None:
        super().__init__(queue, lambda *_: None)

    def send(self, job_id: str, priority: Priority) -> None:
        raise kombu.exceptions.OperationalError("connection refused")
