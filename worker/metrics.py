"""A worker's Prometheus metrics (docs/deployment.md, "Metrics"), counted in its model processes and
served by its main process on ``WORKER_METRICS_PORT``.

The job runner records each step where it already measures it; this module holds the
metric objects, the two records that need more than one call, and the endpoint. The
model processes are forks of the main one, so the values go through prometheus-client's
multiprocess files (:mod:`common.metrics`), whose directory ``worker.celery_app``
chooses before this module is first imported.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Optional

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from m2fp_contract.errors import ErrorCode
from common.jobs import Job
from common.metrics import scrape_registry

log = logging.getLogger(__name__)

# Seconds: a job waits from a fraction of a second (idle workers) to hours (a backfill
# backlog); a full-size photo parses in 2-10 s on a CPU; rendering and storing take
# tens of milliseconds to a few seconds.
_WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600, 86400)
_INFERENCE_BUCKETS = (0.1, 0.25, 0.5, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 30, 60, 120, 300)
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

JOBS = Counter("m2fp_worker_jobs_total", "Jobs that ended here (succeeded, failed, canceled while running), "
               "wait out a transient error (retried), or that this worker's sweep queued again after their "
               "process was lost (recovered) or sent a missing message (resent), by error code",
               ["outcome", "code"])
QUEUE_WAIT_SECONDS = Histogram("m2fp_worker_queue_wait_seconds", "From a job's submission (created_at) to a "
                               "model process starting it", buckets=_WAIT_BUCKETS)
INFERENCE_SECONDS = Histogram("m2fp_worker_inference_seconds", "The model's parse of one photo",
                              buckets=_INFERENCE_BUCKETS)
RENDER_SECONDS = Histogram("m2fp_worker_render_seconds", "Rendering one job's outputs", buckets=_STEP_BUCKETS)
STORE_SECONDS = Histogram("m2fp_worker_store_seconds", "Writing one job's outputs to storage",
                          buckets=_STEP_BUCKETS)
BUSY = Gauge("m2fp_worker_processes_busy", "Model processes running a job now", multiprocess_mode="livesum")


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # Python 3.10 reads no "Z"


def job_started(job: Job) -> None:
    """The job left its queue: how long it waited there since it was submitted."""
    if job.started_at:
        QUEUE_WAIT_SECONDS.observe(max(0.0, (_time(job.started_at) - _time(job.created_at)).total_seconds()))


def count_job(outcome: str, code: Optional[ErrorCode] = None) -> None:
    """A job succeeded, failed (with its code), was canceled at a safe point, was
    retried after a transient error, or was recovered or resent by the sweep."""
    JOBS.labels(outcome, code.value if code else "").inc()


def serve(port: int) -> None:
    """The endpoint of every model process's metrics, from the main worker process."""
    try:
        start_http_server(port, registry=scrape_registry())
    except OSError as exc:
        raise SystemExit(f"m2fp worker cannot start: its metrics port {port} is taken ({exc}); set "
                         "WORKER_METRICS_PORT to a free port, or 0 for no metrics endpoint") from None
    log.info("metrics of this worker on http://0.0.0.0:%d/metrics", port)
