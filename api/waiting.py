"""Waiting for a job within one request: ``Prefer: wait=N`` (RFC 7240, as Replicate's API
uses it) and the demo's synchronous routes.

The job's record is read until it ends or the wait is over, at first often (a small
photo takes well under a second of queue and render overhead) and then every quarter
second. A waiting request holds a server thread, so only half of a process's threads
may wait at once: a request that finds no slot is answered at once, as without waiting.
"""
from __future__ import annotations

import re
import threading
import time
from typing import Optional

from common.jobs import Job
from common.services import Services
from m2fp_contract.schema import PREFER_WAIT_PATTERN

_PREFER_WAIT = re.compile(PREFER_WAIT_PATTERN, re.IGNORECASE)  # wait=N as SubmitHeaders.prefer documents it
_FIRST_POLL, _LONGEST_POLL = 0.05, 0.25  # seconds between reads of the record
_slots: Optional[threading.BoundedSemaphore] = None
_slots_lock = threading.Lock()


def preferred_wait(header: Optional[str], limit: float) -> Optional[float]:
    """The seconds a ``Prefer`` header asks to wait (``wait=N``), capped at ``limit``; None
    when it asks for none."""
    found = _PREFER_WAIT.search(header or "")
    if not found:
        return None
    return min(float(found.group(1)), limit)


def _wait_slots(threads: int) -> threading.BoundedSemaphore:
    """Half the threads (none of a single-threaded process: its one thread must serve)."""
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(threads // 2)
        return _slots


def wait_for_job(services: Services, job: Job, seconds: float) -> tuple[Job, bool]:
    """``job`` as it stands once it ended, or after ``seconds``; and whether it was waited
    for (not when it had already ended, nor when every waiting slot was taken)."""
    if job.status.terminal or seconds <= 0:
        return job, False
    slots = _wait_slots(services.settings.api_threads)
    if not slots.acquire(blocking=False):
        return job, False
    try:
        deadline = time.monotonic() + seconds
        pause = _FIRST_POLL
        while True:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            current = services.jobs.get(job.id)
            if current is None or current.status.terminal or time.monotonic() >= deadline:
                return current or job, True
            job, pause = current, min(pause * 2, _LONGEST_POLL)
    finally:
        slots.release()
