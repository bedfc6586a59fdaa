"""Work a Celery worker's main process does every so often, beside its tasks.

The webhook outbox sweep (delivery/outbox.py) and the stranded-job sweep
(worker/sweeper.py) run this way: a daemon thread started once the worker is ready
(after a prefork pool has forked) and stopped at its shutdown. A Redis error in one
round is logged and the next round tries again; the worker keeps serving.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import redis
from celery.signals import worker_ready, worker_shutdown

log = logging.getLogger(__name__)


def every(interval: float, name: str, step: Callable[[], object]) -> None:
    """Run ``step`` every ``interval`` seconds while this worker runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                step()
            except redis.RedisError:
                log.warning("%s failed (Redis unavailable?); next try in %.0f s", name, interval, exc_info=True)
            except Exception:  # a bug in one round must not end the rounds to come
                log.exception("%s failed; next try in %.0f s", name, interval)

    @worker_ready.connect(weak=False)
    def _begin(**_kwargs) -> None:
        threading.Thread(target=loop, name=name, daemon=True).start()

    @worker_shutdown.connect(weak=False)
    def _end(**_kwargs) -> None:
        stop.set()
