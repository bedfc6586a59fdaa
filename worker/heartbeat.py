"""A model process's heartbeat: alive, and which job it runs (common.liveness).

Beats come from a daemon thread, so a process busy with a long inference still beats
(the engines release the GIL while they compute); a process that died, hung in a way
that stops its threads, or was killed with its container goes silent, and the
sweeper (worker/sweeper.py) hands its job on.
"""
from __future__ import annotations

import logging
import threading
from typing import Optional

import redis

from common.liveness import ModelProcesses

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, processes: ModelProcesses, name: str, interval: float) -> None:
        self.processes = processes
        self.name = name
        self.interval = interval
        self._job: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Beat once now (the process is known before its first job), then every interval."""
        self._beat()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def working_on(self, job_id: Optional[str]) -> None:
        """Say at once that this process now runs ``job_id`` (None: it finished). Said
        before the job's record names this process, and after its final record, so the
        sweeper never sees a job of a live process that does not claim it. If Redis is
        away now, the next periodic beat says it."""
        self._job = job_id
        self._beat()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.processes.withdraw(self.name)
        except redis.RedisError:
            log.debug("could not withdraw %s; its entry goes silent and is pruned", self.name, exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def _beat(self) -> None:
        try:
            self.processes.beat(self.name, self._job)
        except redis.RedisError:
            log.warning("heartbeat of %s failed (Redis unavailable?); trying again in %.0f s", self.name,
                        self.interval, exc_info=True)
