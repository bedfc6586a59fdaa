"""gunicorn's settings for the API: ``gunicorn api.wsgi:app --config python:api.gunicorn_conf``.

Only the multiprocess bookkeeping of the metrics (:mod:`common.metrics`) lives here; the
bind address and worker count stay on the command line. These hooks run in gunicorn's
master process, which never imports the app: the metrics directory is chosen and
emptied before any worker is forked (and imports prometheus-client), and a worker that
exits stops counting in the live gauges.
"""
from __future__ import annotations

from typing import Any

from common.metrics import clear_metrics_dir, mark_process_dead, use_metrics_dir
from common.settings import load_settings


def on_starting(server: Any) -> None:
    clear_metrics_dir(use_metrics_dir(load_settings().prometheus_multiproc_dir, "api"))


def child_exit(server: Any, worker: Any) -> None:
    mark_process_dead(worker.pid)
