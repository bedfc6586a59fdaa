"""What a worker process is configured with, decided once when it starts.

Importing it prepares the process in this order: settings read once, resource plan
(processes, threads) derived from the CPUs and memory this container may use, thread
limits and process tuning applied (both must precede the first import of torch, and
the pool processes are forks of this one), then the metrics directory chosen (before
prometheus-client is imported). The Celery app (:mod:`worker.celery_app`) and the
start-up signals (:mod:`worker.startup`) both read it; neither imports the other's
module for it.
"""
from __future__ import annotations

from common.metrics import use_metrics_dir
from common.settings import load_settings
from worker.process_tuning import apply_process_tuning
from worker.resources import apply_thread_limits, plan_resources

settings = load_settings()
resource_plan = plan_resources(settings)
apply_thread_limits(resource_plan)
process_tuning = apply_process_tuning(settings.malloc_keep_freed, settings.mkl_avx2_on_amd)
# Before worker.tasks imports prometheus-client: the model processes inherit it (worker/metrics.py).
metrics_dir = use_metrics_dir(settings.prometheus_multiproc_dir, "worker")
