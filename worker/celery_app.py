"""The worker's Celery application: ``celery -A worker.celery_app worker`` starts a worker.

Only worker processes import this module. The process is configured first
(:mod:`worker.process_config`: settings, resource plan, tuning, metrics directory), then
the app is built from the shared queue contract (:mod:`common.celery_factory`), and the
start-up signals (:mod:`worker.startup`) are connected.
"""
from __future__ import annotations

from common.celery_factory import create_celery
from common.worker_probe import install_liveness_file
from worker.process_config import resource_plan, settings
import worker.startup  # noqa: F401  (connects the worker's start-up signals)

app = create_celery(settings)
app.conf.worker_concurrency = resource_plan.concurrency  # `--concurrency` on the command line wins
install_liveness_file(app, "worker", settings.worker_liveness_dir)  # read by `python -m common.worker_probe worker`
