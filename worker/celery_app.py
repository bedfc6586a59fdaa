"""The one Celery application: ``celery -A worker.celery_app worker`` starts a worker.

The API imports :func:`create_celery` from here too (to enqueue). Importing this
module does nothing else: the worker's own set-up (settings, resource plan, thread limits,
process tuning, start-up signals) happens when ``app`` is first looked up, which only a
worker does.
"""
from __future__ import annotations

import functools
from typing import Any

from celery import Celery
from kombu import Queue

from common.settings import Settings, load_settings
from worker.process_tuning import apply_process_tuning
from worker.resources import ResourcePlan, apply_thread_limits, plan_resources

PARSE_TASK = "m2fp.parse"


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings``; delivery rules live here, once."""
    app = Celery("m2fp", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        # JSON only: a pickled message from anyone who reaches Redis would run code.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # job state lives in our own record (common.jobs)
        task_default_queue=settings.queue_name,
        # Consumed in this order ("priority" below): interactive jobs always first.
        task_queues=[Queue(settings.queue_name), Queue(settings.backfill_queue_name)],
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


@functools.cache
def _worker() -> dict[str, Any]:
    settings = load_settings()
    resource_plan: ResourcePlan = plan_resources(settings)
    # Both before anything imports torch in this process (the pool processes are its forks).
    apply_thread_limits(resource_plan)
    process_tuning = apply_process_tuning(settings.malloc_keep_freed, settings.mkl_avx2_on_amd)
    app = create_celery(settings)
    app.conf.worker_concurrency = resource_plan.concurrency  # `--concurrency` on the command line wins
    import worker.startup  # noqa: F401  (connects the start-up signals of worker processes)

    return {"settings": settings, "resource_plan": resource_plan, "process_tuning": process_tuning, "app": app}


def __getattr__(name: str) -> Any:
    """``app``, ``settings``, ``resource_plan`` and ``process_tuning`` of the worker
    process, built on first use."""
    if name in ("app", "settings", "resource_plan", "process_tuning"):
        return _worker()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
