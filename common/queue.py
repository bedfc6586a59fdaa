"""Sending jobs to the workers and knowing where each waiting job stands.

The API sends through :class:`JobQueue` and measures backpressure with it; the worker
drops a job from the waiting order when it takes it; the sweeper asks it which jobs
still have a message. The Celery app itself comes from :mod:`common.celery_factory`.
"""
from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import redis
from celery import Celery

from common.celery_factory import PARSE_TASK, UNACKED_KEY, WEBHOOK_TASK, create_celery, queue_names
from common.eta import ServiceTimes, eta_seconds, per_job
from common.liveness import ModelProcesses
from common.settings import Settings
from m2fp_contract.schema import Priority

log = logging.getLogger(__name__)

_SEND_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}


@dataclass(frozen=True)
class Place:
    """Where a queued job stands: ``position`` in its own queue (1 = next), ``ahead`` =
    jobs any worker takes before it (for a backfill job, every waiting interactive job
    too), and ``eta_seconds`` until a worker starts it, when the workers' recent service
    times are known."""

    position: int
    ahead: int
    eta_seconds: Optional[float]


class JobQueue:
    """Hands job ids to the workers, says how many wait, and where each waiting job stands.

    Besides the Celery message, each waiting job has an entry in a sorted set per
    priority (job id -> enqueue time), removed when a worker takes the job or it is
    canceled: a job's place is its rank there, found in O(log n) without reading the
    queue itself. ETAs come from the workers' recent service times
    (:class:`~common.eta.ServiceTimes`) and the model processes heard from recently
    (:class:`~common.liveness.ModelProcesses`).
    """

    WAITING = "m2fp:waiting:"

    def __init__(self, settings: Settings, client: redis.Redis, socket_timeout: float = 10) -> None:
        self.names = queue_names(settings)
        self.client = client
        self.settings = settings
        self.service_times = ServiceTimes(client)
        self.processes = ModelProcesses(client, silent_after=settings.stranded_after_seconds)
        self._socket_timeout = socket_timeout
        self._celery: Optional[Celery] = None

    def _app(self) -> Celery:
        if self._celery is None:  # built on first send: processes that only read never need one
            app = create_celery(self.settings)
            app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                                 "socket_timeout": self._socket_timeout,
                                                 "socket_connect_timeout": min(5, self._socket_timeout)}
            self._celery = app
        return self._celery

    def _waiting(self, priority: Priority) -> str:
        return self.WAITING + self.names[priority]

    def enqueue(self, job_id: str, priority: Priority) -> None:
        """Send the job's message; retried briefly, then the error reaches the caller. A job
        moved to the interactive queue leaves the backfill one's order."""
        now = time.time()
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self._waiting(priority), {job_id: now}, nx=True)
            if priority is Priority.INTERACTIVE:
                pipe.zrem(self._waiting(Priority.BACKFILL), job_id)
            # Entries of jobs whose messages never reached a worker go with their records.
            pipe.zremrangebyscore(self._waiting(priority), "-inf", now - self.settings.job_ttl_seconds)
            pipe.execute()
        self.send(job_id, priority)

    def send(self, job_id: str, priority: Priority) -> None:
        """The Celery message alone."""
        self._app().send_task(PARSE_TASK, args=[job_id], queue=self.names[priority], retry=True,
                              retry_policy=_SEND_RETRY)

    def send_webhook(self, delivery: dict) -> None:
        """A webhook delivery (:class:`common.webhooks.DeliveryMessage`) for the delivery worker."""
        self._app().send_task(WEBHOOK_TASK, kwargs=delivery, queue=self.settings.webhook_queue_name, retry=True,
                              retry_policy=_SEND_RETRY)

    def taken(self, job_id: str) -> None:
        """The job left the queue: a worker took it, or it was canceled or rolled back."""
        with self.client.pipeline(transaction=False) as pipe:
            for priority in Priority:
                pipe.zrem(self._waiting(priority), job_id)
            pipe.execute()

    def depth(self, priority: Priority) -> int:
        """Jobs waiting in the priority's queue: its waiting-order entries, not its Celery
        messages, so a canceled job stops counting at once (its message is dropped only
        when a worker reaches it) and a job moved to the interactive queue counts there
        only (its backfill message is a spare)."""
        return int(self.client.zcard(self._waiting(priority)))

    def places(self, jobs: list[tuple[str, Priority]]) -> dict[str, Place]:
        """The place of each waiting job among ``(job id, priority)``, in one round trip."""
        if not jobs:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(self._waiting(Priority.INTERACTIVE))
            self.service_times.read(pipe)
            self.processes.count_live(pipe)
            for job_id, priority in jobs:
                pipe.zrank(self._waiting(priority), job_id)
            interactive_waiting, samples, processes, *ranks = pipe.execute()
        seconds_per_job = per_job(samples)
        found = {}
        for (job_id, priority), rank in zip(jobs, ranks):
            if rank is None:
                continue
            ahead = rank + (interactive_waiting if priority is Priority.BACKFILL else 0)
            found[job_id] = Place(position=rank + 1, ahead=ahead,
                                  eta_seconds=eta_seconds(ahead, seconds_per_job, processes))
        return found

    def jobs_with_messages(self) -> set[str]:
        """The ids of every job that has a parse message in Redis: waiting in a queue, or
        delivered to a worker and not yet acknowledged (running, prefetched, or holding
        a retry's countdown). Reads the whole backlog: the sweeper calls it once per
        sweep, and only when some job has been queued for long."""
        found = set()
        for raw in self._messages():
            try:
                payload = json.loads(raw)
                if isinstance(payload, list):  # an unacked entry: [message, exchange, routing key]
                    payload = payload[0]
                if payload.get("headers", {}).get("task") != PARSE_TASK:
                    continue
                args = json.loads(base64.b64decode(payload["body"]))[0]
                found.add(str(args[0]))
            except (ValueError, KeyError, IndexError, TypeError):
                log.warning("skipping a queue message that is not a parse message the sweeper can read")
        return found

    def _messages(self, chunk: int = 1000) -> Iterator[bytes]:
        for name in self.names.values():
            start = 0
            while True:
                batch = self.client.lrange(name, start, start + chunk - 1)
                yield from batch
                if len(batch) < chunk:
                    break
                start += chunk
        for _, raw in self.client.hscan_iter(UNACKED_KEY, count=chunk):
            yield raw
