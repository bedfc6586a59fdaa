"""The queue contract between the API and the workers, in one place.

The task name, the queue of each priority, the Celery app's delivery rules, and the
order and depth of the jobs waiting in each queue live here. The API imports this module to enqueue and to measure
backpressure; the worker's Celery app (``worker.celery_app``) is built by the same
factory, so both sides always agree. Importing it loads no model code.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import redis
from celery import Celery
from kombu import Queue

from m2fp_contract.schema import Priority
from common.settings import Settings

PARSE_TASK = "m2fp.parse"
# The worker module that defines the tasks; only a worker process imports it.
TASK_MODULES = ["worker.tasks"]
# Webhook deliveries: their own queue and their own light worker (delivery/), never a model process.
WEBHOOK_TASK = "m2fp.webhook"
WEBHOOK_TASK_MODULES = ["delivery.tasks"]


def queue_names(settings: Settings) -> dict[Priority, str]:
    """The Redis queue of each priority, in the order workers consume them."""
    return {Priority.INTERACTIVE: settings.queue_name, Priority.BACKFILL: settings.backfill_queue_name}


def create_celery(settings: Settings, tasks: Optional[list[str]] = None,
                  queues: Optional[list[str]] = None) -> Celery:
    """A Celery app configured from ``settings``; delivery rules live here, once. By
    default the model workers' app (``tasks`` and the parse ``queues``); the webhook
    delivery worker names its own."""
    queues = queues or list(queue_names(settings).values())
    app = Celery("m2fp", broker=settings.redis_url, include=TASK_MODULES if tasks is None else tasks)
    app.conf.update(
        # JSON only: a pickled message from anyone who reaches Redis would run code.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # job state lives in our own record (common.jobs)
        task_default_queue=queues[0],
        # Consumed in this order ("priority" below): interactive jobs always first.
        task_queues=[Queue(name) for name in queues],
        # A job is acknowledged only once it finished; a worker killed mid-job leaves
        # it unacknowledged, and Redis hands it to another worker after the
        # visibility timeout (which must exceed the hard time limit).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.unacked_restore_interval,
            "unacked_restore_throttle": 1,  # kombu 5.7 scans only every 10th sweep by default
            "socket_connect_timeout": 5,
            "queue_order_strategy": "priority",
        },
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_send_task_events=False,
        worker_hijack_root_logger=True,
    )
    return app


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
    queue itself. ETAs come from the last :data:`SERVICE_SAMPLES` per-job service times
    the workers record and from the model processes that reported in the last
    :data:`PROCESS_WINDOW` seconds.
    """

    WAITING = "m2fp:waiting:"
    SERVICE_TIMES = "m2fp:service-seconds"
    PROCESSES = "m2fp:model-processes"
    SERVICE_SAMPLES = 50

    def __init__(self, settings: Settings, client: redis.Redis, socket_timeout: float = 10) -> None:
        self.names = queue_names(settings)
        self.client = client
        self.settings = settings
        self._socket_timeout = socket_timeout
        self._celery: Optional[Celery] = None
        # A process that reported within this window still serves; it reports at start and
        # after every job, so the window spans the longest job (the hard time limit) twice.
        self.process_window = 2 * settings.task_time_limit

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
        self._app().send_task(PARSE_TASK, args=[job_id], queue=self.names[priority],
                              retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2,
                                                        "interval_step": 0.5, "interval_max": 2})

    def send_webhook(self, delivery: dict) -> None:
        """A webhook delivery (:class:`common.webhooks.DeliveryMessage`) for the delivery worker."""
        self._app().send_task(WEBHOOK_TASK, kwargs=delivery, queue=self.settings.webhook_queue_name,
                              retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2,
                                                        "interval_step": 0.5, "interval_max": 2})

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
            pipe.lrange(self.SERVICE_TIMES, 0, self.SERVICE_SAMPLES - 1)
            pipe.zcount(self.PROCESSES, time.time() - self.process_window, "+inf")
            for job_id, priority in jobs:
                pipe.zrank(self._waiting(priority), job_id)
            interactive_waiting, samples, processes, *ranks = pipe.execute()
        seconds = [float(sample) for sample in samples]
        per_job = sum(seconds) / len(seconds) if seconds else None
        found = {}
        for (job_id, priority), rank in zip(jobs, ranks):
            if rank is None:
                continue
            ahead = rank + (interactive_waiting if priority is Priority.BACKFILL else 0)
            eta = None
            if per_job is not None and processes:
                eta = round(math.ceil((ahead + 1) / processes) * per_job, 1)
            found[job_id] = Place(position=rank + 1, ahead=ahead, eta_seconds=eta)
        return found

    def record_service(self, process: str, seconds: float) -> None:
        """A model process finished a job in ``seconds`` (and still serves)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.lpush(self.SERVICE_TIMES, f"{seconds:.3f}")
            pipe.ltrim(self.SERVICE_TIMES, 0, self.SERVICE_SAMPLES - 1)
            pipe.zadd(self.PROCESSES, {process: time.time()})
            pipe.execute()

    def serving(self, process: str, serves: bool = True) -> None:
        """A model process is ready to take jobs (at its start), or stops (at its exit)."""
        if serves:
            self.client.zadd(self.PROCESSES, {process: time.time()})
        else:
            self.client.zrem(self.PROCESSES, process)
