"""The queue contract between the API and the workers, in one place.

The task name, the queue of each priority, the Celery app's delivery rules and the
depth of a queue (the only code that knows kombu's Redis layout: one list per queue,
named after it) live here. The API imports this module to enqueue and to measure
backpressure; the worker's Celery app (``worker.celery_app``) is built by the same
factory, so both sides always agree. Importing it loads no model code.
"""
from __future__ import annotations

from typing import Optional

import redis
from celery import Celery
from kombu import Queue

from common.schema import Priority
from common.settings import Settings

PARSE_TASK = "m2fp.parse"
# The worker module that defines the tasks; only a worker process imports it.
TASK_MODULES = ["worker.tasks"]


def queue_names(settings: Settings) -> dict[Priority, str]:
    """The Redis queue of each priority, in the order workers consume them."""
    return {Priority.INTERACTIVE: settings.queue_name, Priority.BACKFILL: settings.backfill_queue_name}


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings``; delivery rules live here, once."""
    app = Celery("m2fp", broker=settings.redis_url, include=TASK_MODULES)
    app.conf.update(
        # JSON only: a pickled message from anyone who reaches Redis would run code.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # job state lives in our own record (common.jobs)
        task_default_queue=settings.queue_name,
        # Consumed in this order ("priority" below): interactive jobs always first.
        task_queues=[Queue(name) for name in queue_names(settings).values()],
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


class JobQueue:
    """Hands job ids to the workers and says how many wait, per priority."""

    def __init__(self, settings: Settings, client: redis.Redis, socket_timeout: float = 10) -> None:
        self.names = queue_names(settings)
        self.client = client
        self.settings = settings
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

    def enqueue(self, job_id: str, priority: Priority) -> None:
        """Send the job's message; retried briefly, then the error reaches the caller."""
        self._app().send_task(PARSE_TASK, args=[job_id], queue=self.names[priority],
                              retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2,
                                                        "interval_step": 0.5, "interval_max": 2})

    def depth(self, priority: Priority) -> int:
        """Messages waiting in the priority's queue (kombu keeps each queue as a Redis list)."""
        return int(self.client.llen(self.names[priority]))
