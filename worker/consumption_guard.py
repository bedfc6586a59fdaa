"""A model worker that stops taking jobs while jobs wait for it shuts down, to be started again.

Celery and kombu have a recurring class of bug in which a worker, after its Redis
connection was lost and restored, stays up and connected but never fetches another
message (celery#8091, #9054, #10205, #10302; the last reported against Celery 5.6.3, still
open for 5.7 here). Its process lives, its heartbeats and liveness probe pass, and the
jobs in its queues wait for ever; it was seen here in a worker container cut off from
its network and reconnected (tests/test_containers.py).

The guard watches for exactly that state from the worker's main process: messages in a
queue this worker consumes while it holds fewer jobs than it has processes, for
``WORKER_STALL_SECONDS`` in a row. A worker that consumes takes such a message within a
second, so the state cannot last on a healthy one. Then it logs why and shuts the worker
down as a SIGTERM would (it holds no job to finish); its supervisor starts it again:
compose's ``restart: unless-stopped`` and Kubernetes do, ``make run`` does not.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Callable, Optional

from celery.signals import worker_ready
from celery.worker import state

from common import periodic
from common.services import Services

CHECK_SECONDS = 5.0
log = logging.getLogger(__name__)


class ConsumptionGuard:
    """Counts how long jobs have waited for this worker while it had room for them."""

    def __init__(self, waiting: Callable[[], int], held: Callable[[], int], capacity: int, stall_seconds: float,
                 stop: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.waiting, self.held, self.capacity = waiting, held, capacity
        self.stall_seconds, self.stop, self.clock = stall_seconds, stop, clock
        self.since: Optional[float] = None
        self.stopped = False

    def check(self) -> None:
        if self.stopped:
            return
        # Counted again from now unless this check sees the state too: one that cannot read
        # Redis (raises) knows nothing, and a consumer reconnecting after it is not stalled.
        since, self.since = self.since, None
        if not (self.held() < self.capacity and self.waiting() > 0):
            return
        now = self.clock()
        self.since = now if since is None else since
        if now - self.since >= self.stall_seconds:
            self.stopped = True
            log.error("this worker has taken no job for %.0f s although jobs wait in its queues and %d of its %d "
                      "processes are free: its connection to Redis stopped delivering (a known Celery/kombu "
                      "reconnect bug). Shutting down to be started again (restart policy, Kubernetes); a worker "
                      "run by hand must be started again by hand", now - self.since, self.capacity - self.held(),
                      self.capacity)
            self.stop()


def start(services: Services) -> None:
    """Guard this worker from its main process once its consumer runs (common.periodic)."""
    guard: dict[str, ConsumptionGuard] = {}

    @worker_ready.connect(weak=False)
    def _arm(sender: Any = None, **_: Any) -> None:
        queues = sender.app.amqp.queues  # what -Q selected, less what an operator canceled since
        client = services.redis
        guard["guard"] = ConsumptionGuard(
            waiting=lambda: sum(int(client.llen(name)) for name in list(queues.consume_from)),
            held=lambda: len(state.reserved_requests),  # received and not finished, running ones included
            capacity=sender.controller.concurrency, stall_seconds=services.settings.worker_stall_seconds,
            stop=lambda: os.kill(os.getpid(), signal.SIGTERM))

    periodic.every(CHECK_SECONDS, "consumption guard", lambda: guard["guard"].check() if guard else None)
