"""The Celery side of the queue contract between the API and the workers, in one place.

The task names, the queue of each priority and the Celery app's delivery rules live
here. The API's sender (:mod:`common.queue`), the model workers' app
(``worker.celery_app``) and the webhook worker's app (``delivery.celery_app``) are all
built by :func:`create_celery`, so every side always agrees. Importing it loads no
model code.
"""
from __future__ import annotations

from typing import Optional

from celery import Celery
from kombu import Queue

from m2fp_contract.schema import Priority
from common.redis_connection import broker_transport_options, broker_url
from common.settings import Settings

PARSE_TASK = "m2fp.parse"
# The worker module that defines the tasks; only a worker process imports it.
TASK_MODULES = ["worker.tasks"]
# Webhook deliveries: their own queue and their own light worker (delivery/), never a model process.
WEBHOOK_TASK = "m2fp.webhook"
WEBHOOK_TASK_MODULES = ["delivery.tasks"]
# Where kombu's Redis transport keeps the messages workers hold but have not acknowledged
# (named here, not left to kombu's default, because the sweeper reads it: common.queue).
UNACKED_KEY = "unacked"


def queue_names(settings: Settings) -> dict[Priority, str]:
    """The Redis queue of each priority, in the order workers consume them."""
    return {Priority.INTERACTIVE: settings.queue_name, Priority.BACKFILL: settings.backfill_queue_name}


def create_celery(settings: Settings, tasks: Optional[list[str]] = None,
                  queues: Optional[list[str]] = None) -> Celery:
    """A Celery app configured from ``settings``; delivery rules live here, once. By
    default the model workers' app (``tasks`` and the parse ``queues``); the webhook
    delivery worker names its own."""
    queues = queues or list(queue_names(settings).values())
    app = Celery("m2fp", broker=broker_url(settings), include=TASK_MODULES if tasks is None else tasks)
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
        # One message per model process: with late acknowledgement a running job holds its
        # process's only slot, so waiting jobs stay in their queue until a process is free
        # (tests/test_kubernetes.py). Not worker_disable_prefetch: it would also count a
        # retry waiting out its countdown as a busy process, idling it for the whole backoff.
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.unacked_restore_interval,
            "unacked_restore_throttle": 1,
            "unacked_key": UNACKED_KEY,  # kombu 5.7 scans only every 10th sweep by default
            "socket_connect_timeout": 5,
            # A broker that vanishes without closing the TCP connection (a network cut, a
            # failover, a NAT timeout) must not hang the worker: without a timeout a
            # synchronous command (an ack, a requeue) waits on the dead socket for ever and
            # the worker never takes a job again (seen: a worker container cut off from
            # its network, tests/test_containers.py). BRPOP polls every second, so 10 s
            # only ever fires on a dead connection; kombu's own check drops a BRPOP whose
            # reply is overdue by the health-check interval.
            "socket_timeout": 10,
            "socket_keepalive": True,
            "health_check_interval": 10,
            "queue_order_strategy": "priority",
            **broker_transport_options(settings),  # the Sentinel group, when REDIS_SENTINELS is set
        },
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Task events feed Flower's task views; each costs Redis commands per job (docs/operations.md).
        worker_send_task_events=settings.worker_task_events,
        task_send_sent_event=settings.worker_task_events,
        worker_hijack_root_logger=True,
    )
    return app
