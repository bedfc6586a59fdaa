"""The worker's Celery application: ``celery -A worker.celery_app worker`` starts a worker.

Only worker processes import this module, and importing it prepares the process in
this order: settings read once, resource plan (processes, threads) derived from the
CPUs and memory this container may use, thread limits and process tuning applied
(both must precede the first import of torch, and the pool processes are forks of
this one), the metrics directory chosen (before prometheus-client is imported), then
the app from the shared queue contract (:mod:`common.queue`), and the start-up
signals (:mod:`worker.startup`) connected.
"""
from __future__ import annotations

from common.metrics import use_metrics_dir
from common.queue import create_celery
from common.settings import load_settings
from worker.process_tuning import apply_process_tuning
from worker.resources import apply_thread_limits, plan_resources

settings = load_settings()
resource_plan = plan_resources(settings)
apply_thread_limits(resource_plan)
process_tuning = apply_process_tuning(settings.malloc_keep_freed, settings.mkl_avx2_on_amd)
# Before worker.tasks imports prometheus-client: the model processes inherit it (worker/metrics.py).
metrics_dir = use_metrics_dir(settings.prometheus_multiproc_dir, "worker")

app = create_celery(settings)
app.conf.worker_concurrency = resource_plan.concurrency  # `--concurrency` on the command line wins

import worker.startup  # noqa: E402,F401  (connects the worker's start-up signals)
