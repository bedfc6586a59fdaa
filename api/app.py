"""The Flask application factory: ``create_app(settings)``."""
from __future__ import annotations

import logging
from typing import Optional

from flask import Flask

from common.jobs import JobStore, redis_client
from common.settings import Settings, load_settings
from common.storage import Storage, create_storage

from api.deps import ApiDeps
from api.errors import register_error_handlers
from api.health import health
from api.routes import jobs

# Headroom for the multipart envelope around the image itself.
MULTIPART_OVERHEAD = 64 * 1024
# Redis time budget of one request: a 2 s socket timeout, tried 3 times for job records
# and 4 times for the enqueue, stays well inside gunicorn's default 30 s worker timeout.
REDIS_SOCKET_TIMEOUT = 2
REDIS_RETRIES = 2


def _celery_enqueue(settings: Settings):
    from worker.celery_app import PARSE_TASK, create_celery

    celery = create_celery(settings)
    celery.conf.broker_transport_options = {**celery.conf.broker_transport_options,
                                            "socket_timeout": REDIS_SOCKET_TIMEOUT,
                                            "socket_connect_timeout": REDIS_SOCKET_TIMEOUT}

    queues = {"interactive": settings.queue_name, "backfill": settings.backfill_queue_name}

    def enqueue(job_id: str, priority: str) -> None:
        celery.send_task(PARSE_TASK, args=[job_id], queue=queues[priority],
                         retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2,
                                                   "interval_step": 0.5, "interval_max": 2})

    return enqueue


def create_app(settings: Optional[Settings] = None, *, storage: Optional[Storage] = None,
               job_store: Optional[JobStore] = None, enqueue=None) -> Flask:
    """Build the API; every dependency may be passed in, else it comes from ``settings``."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + MULTIPART_OVERHEAD
    app.json.sort_keys = False
    app.extensions["m2fp"] = ApiDeps(
        settings=settings,
        storage=storage or create_storage(settings),
        jobs=job_store or JobStore(redis_client(settings.redis_url, REDIS_SOCKET_TIMEOUT, REDIS_RETRIES),
                                   settings.job_ttl_seconds),
        enqueue=enqueue or _celery_enqueue(settings),
    )
    app.register_blueprint(jobs)
    app.register_blueprint(health)
    register_error_handlers(app)
    logging.getLogger("api").setLevel(logging.INFO)
    return app
