"""Worker start-up: check the stack and find the model once, then load it per process.

``worker_init`` runs once in the main worker process before it consumes anything: the
environment self-check and the model download (or local directory check) happen
there, and a failure stops the worker with one message naming the fix. Each pool
process then loads the model exactly once in ``worker_process_init``, before Celery
hands it a job.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Optional

from celery.signals import celeryd_after_setup, worker_init, worker_process_init

from worker.model_source import ModelUnavailable, resolve_model_dir

log = logging.getLogger("worker.startup")
_model_dir: Optional[Path] = None
_startup_notes: list[str] = []  # worker_init runs before Celery sets up logging


def _config():
    """The worker's settings and resource plan (imported late: celery_app imports this module)."""
    from worker import celery_app

    return celery_app.settings, celery_app.resource_plan


@worker_init.connect
def check_environment_and_model(sender: Any = None, **_: Any) -> None:
    from worker.selfcheck import run_checks

    settings, resource_plan = _config()
    concurrency = getattr(sender, "concurrency", resource_plan.concurrency)
    _startup_notes.append(f"Resource plan: {resource_plan.describe()}; running {concurrency} process(es) "
                          "(WORKER_CONCURRENCY / TORCH_THREADS override)")

    problems = run_checks()
    if problems:
        raise SystemExit("m2fp worker cannot start, inference stack self-check failed:\n  - "
                         + "\n  - ".join(problems))
    global _model_dir
    try:
        _model_dir = resolve_model_dir(settings)
    except ModelUnavailable as exc:
        raise SystemExit(f"m2fp worker cannot start: {exc}") from None
    _startup_notes.append(f"self-check OK; model directory {_model_dir}")


@celeryd_after_setup.connect
def report_startup(**_: Any) -> None:
    for note in _startup_notes:
        log.info(note)


@worker_process_init.connect
def load_engine(**_: Any) -> None:
    import torch

    from worker.context import WorkerContext, set_context
    from worker.engine import M2FPEngine

    settings, resource_plan = _config()
    torch.set_num_threads(resource_plan.threads)
    started = time.perf_counter()
    try:
        assert _model_dir is not None, "worker_init did not run"
        engine = M2FPEngine(_model_dir, settings.inference_max_side)
    except Exception:
        log.critical("cannot load the M2FP model from %s; stopping the worker", _model_dir, exc_info=True)
        # A pool process that dies at start is respawned forever; stop the whole worker.
        os.kill(os.getppid(), signal.SIGTERM)
        os._exit(1)
    set_context(WorkerContext.create(settings, engine))
    log.info("worker process %d ready: model %s loaded in %.1f s, %d torch threads",
             os.getpid(), _model_dir, time.perf_counter() - started, torch.get_num_threads())
