"""gunicorn's settings for the API: ``gunicorn api.wsgi:app --config python:api.gunicorn_conf --bind HOST:PORT``.

Everything but the bind address comes from the settings (``API_WORKERS``, ``API_THREADS``,
``API_TIMEOUT``; the request deadline of :mod:`api.server`), so ``make run``, the tests
and compose start the same server. Threaded workers: a request that waits (a slow
client, a batch reading the store) holds one thread, and gunicorn's timeout watches
only each process's main loop, so a long request is never killed half-way.

The multiprocess bookkeeping of the metrics (:mod:`common.metrics`) and the one-time
check and announcement of the API keys live here too. These hooks run in gunicorn's
master process, which never imports the app: the metrics directory is chosen and
emptied before any worker is forked (and imports prometheus-client), and a worker that
exits stops counting in the live gauges.
"""
from __future__ import annotations

from typing import Any

from common.metrics import clear_metrics_dir, mark_process_dead, use_metrics_dir
from common.settings import load_settings

_settings = load_settings()  # a bad configuration stops gunicorn here, with the message

worker_class = "api.server.ThreadWorker"
workers = _settings.api_workers
threads = _settings.api_threads
timeout = _settings.api_timeout
graceful_timeout = 10  # seconds requests in flight get to finish at a stop
accesslog = "-"
# gunicorn believes X-Forwarded-Proto from 127.0.0.1 by default, whoever sends it there;
# forwarded headers are TRUSTED_PROXIES' business alone (api.app).
forwarded_allow_ips = ""


def on_starting(server: Any) -> None:
    clear_metrics_dir(use_metrics_dir(_settings.prometheus_multiproc_dir, "api"))
    # After the metrics directory is set (api.auth imports no metrics, but stay on the safe
    # side): a bad key setting stops the service here, before any worker starts, and the
    # open-service warning is logged once for all workers.
    from api import auth

    auth.announce(_settings, auth.KeyRing.from_settings(_settings))
    auth.announced = True


def child_exit(server: Any, worker: Any) -> None:
    mark_process_dead(worker.pid)
