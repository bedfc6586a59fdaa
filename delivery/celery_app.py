"""The webhook delivery worker: ``celery -A delivery.celery_app worker`` starts one.

It loads no model and needs no storage: it consumes only the webhook queue
(``WEBHOOK_QUEUE_NAME``) from the shared queue contract (:mod:`common.celery_factory`), with a
pool of threads, since a delivery mostly waits on its receiver. Any number may run;
the API image carries it.
"""
from __future__ import annotations

from common.celery_factory import WEBHOOK_TASK_MODULES, create_celery
from common.settings import load_settings
from common.worker_probe import install_liveness_file

settings = load_settings()

app = create_celery(settings, tasks=WEBHOOK_TASK_MODULES, queues=[settings.webhook_queue_name])
app.conf.update(
    worker_pool="threads",
    worker_concurrency=settings.webhook_concurrency,
    # One attempt is bounded by the receiver's timeouts; nothing here runs for minutes.
    task_soft_time_limit=None,
    task_time_limit=None,
)
install_liveness_file(app, "webhooks", settings.worker_liveness_dir)  # `python -m common.worker_probe webhooks`
