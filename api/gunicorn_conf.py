"""gunicorn's settings for the API: ``gunicorn api.wsgi:app --config python:api.gunicorn_conf``.

The multiprocess bookkeeping of the metrics (:mod:`common.metrics`) and the one-time
check and announcement of the API keys live here; the bind address and worker count
stay on the command line. These hooks run in gunicorn's
master process, which never imports the app: the metrics directory is chosen and
emptied before any worker is forked (and imports prometheus-client), and a worker that
exits stops counting in the live gauges.
"""
from __future__ import annotations

from typing import Any

from common.metrics import clear_metrics_dir, mark_process_dead, use_metrics_dir
from common.settings import load_settings


def on_starting(server: Any) -> None:
    settings = load_settings()
    clear_metrics_dir(use_metrics_dir(settings.prometheus_multiproc_dir, "api"))
    # After the metrics directory is set (api.auth imports no metrics, but stay on the safe
    # side): a bad key setting stops the service here, before any worker starts, and the
    # open-service warning is logged once for all workers.
    from api import auth

    auth.announce(settings, auth.KeyRing.from_settings(settings))
    auth.announced = True


def child_exit(server: Any, worker: Any) -> None:
    mark_process_dead(worker.pid)
