"""What every process of the service talks to, built once from the settings.

The API keeps one :class:`Services` in its app; each worker process keeps one next to
its engine. Tests build their own, with any part replaced behind the same interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import redis

from common.job_store import JobStore
from common.redis_connection import redis_client
from common.queue import JobQueue
from common.settings import Settings
from common.storage import Storage, create_storage
from common.webhooks import WebhookNotifier


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    storage: Storage
    jobs: JobStore
    queue: JobQueue
    webhooks: Optional[WebhookNotifier] = None  # sends the jobs' webhook events (``jobs.on_event``)

    @classmethod
    def create(cls, settings: Settings, *, redis_socket_timeout: float = 10, redis_retries: int = 6) -> "Services":
        """Connect to what ``settings`` name. The API passes small Redis budgets (a hung
        Redis must answer 503 inside gunicorn's timeout); workers keep the defaults."""
        client = redis_client(settings, redis_socket_timeout, redis_retries)
        storage = create_storage(settings)
        queue = JobQueue(settings, client, socket_timeout=redis_socket_timeout)
        # Every lifecycle step that reaches a job's webhook event sends it from here.
        webhooks = WebhookNotifier(settings, storage, queue)
        return cls(settings=settings, redis=client, storage=storage, queue=queue, webhooks=webhooks,
                   jobs=JobStore(client, settings.job_ttl_seconds, on_event=webhooks.send))
