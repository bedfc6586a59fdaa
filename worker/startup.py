"""Worker start-up: check the stack, find the model and prepare its engine once, then
load the engine per process.

``worker_init`` runs once in the main worker process before it consumes anything: the
environment self-check, the model download (or local directory check) and the choice
of engine happen there (building the OpenVINO graph in a child process the first time
a checkpoint is seen), and a failure stops the worker with one message naming the fix.
Each pool process then loads the engine exactly once in ``worker_process_init``, before
Celery hands it a job.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from celery.signals import celeryd_after_setup, worker_init, worker_process_init, worker_process_shutdown

from common.metrics import clear_metrics_dir, mark_process_dead
from common.settings import PROCESS_MEMORY_MB, Settings
from worker.engine_loading import EngineChoice, effective_precision
from worker.process_config import metrics_dir, process_tuning, resource_plan, settings as worker_settings
from worker.model_source import ModelUnavailable, resolve_model_dir
from worker.process_tuning import has_bf16

log = logging.getLogger("worker.startup")
_engine_choice: Optional[EngineChoice] = None
_startup_failure: Optional[str] = None  # why the main process's checks failed (worker_init)
# A first build takes about a minute on two cores; far longer means a stuck build or lock.
ENGINE_BUILD_TIMEOUT = 900
_startup_notes: list[tuple[int, str]] = []  # worker_init runs before Celery sets up logging


def _note(message: str, level: int = logging.INFO) -> None:
    _startup_notes.append((level, message))


def choose_engine(settings: Settings, model_dir: Path) -> EngineChoice:
    """The engine every pool process will load, with its OpenVINO cache entry ready.

    The cache is checked (and built, the first time) by ``python -m worker.engine_cache``
    in a child process: the build holds the whole torch model, and a child gives that
    memory back; it also proves the runtime loads here before any pool process needs it.
    """
    torch_choice = EngineChoice("torch", model_dir, labels_max_pixels=settings.labels_max_pixels)
    if settings.m2fp_engine == "torch":
        _note("engine: torch (M2FP_ENGINE=torch)")
        if settings.m2fp_precision != "fp32":
            _note(f"M2FP_PRECISION={settings.m2fp_precision} applies to the OpenVINO engine only: the torch "
                  "engine runs fp32", logging.WARNING)
        return torch_choice
    precision, precision_note = effective_precision(settings.m2fp_precision, has_bf16())
    if precision_note:
        _note(precision_note, logging.WARNING)
    started = time.perf_counter()
    try:
        child = subprocess.run(
            [sys.executable, "-m", "worker.engine_cache", "--model", str(model_dir),
             "--cache-dir", str(settings.model_cache_dir)],
            capture_output=True, text=True, timeout=ENGINE_BUILD_TIMEOUT)
        failed = child.returncode != 0
        errors = [line for line in child.stderr.splitlines() if line.startswith("error: ")]
        reason = (errors[-1][len("error: "):] if errors else
                  f"the engine build exited with status {child.returncode}"
                  + (" (killed: out of memory?)" if child.returncode < 0 else "")
                  + f"; last output: {' '.join(child.stderr.strip().splitlines()[-2:])}")
    except subprocess.TimeoutExpired:
        failed, reason = True, (f"the engine build or its lock took over {ENGINE_BUILD_TIMEOUT} s; another "
                                f"build may be stuck on {settings.model_cache_dir}")
    if failed:
        if settings.m2fp_engine == "openvino":
            raise SystemExit(f"m2fp worker cannot start: the OpenVINO engine is unavailable ({reason}). "
                             "Fix that, or set M2FP_ENGINE=auto (falls back to torch) or M2FP_ENGINE=torch")
        _note(f"OpenVINO engine unavailable ({reason}); using the torch engine (about 1.6x slower, and it "
              f"needs MODEL_PROCESS_MEMORY_MB={PROCESS_MEMORY_MB['torch']} per process: lower WORKER_CONCURRENCY "
              "if the memory is short). Set M2FP_ENGINE=torch to silence this warning and budget its memory",
              logging.WARNING)
        return torch_choice
    entry = json.loads(child.stdout.strip().splitlines()[-1])
    if entry["built"]:
        what = "rebuilt (the cached one was corrupt)" if entry["replaced_corrupt"] else "built"
        _note(f"OpenVINO engine {what} for this checkpoint in {entry['seconds']:.1f} s: {entry['path']}")
    else:
        _note(f"OpenVINO engine reused from {entry['path']} (checked in {time.perf_counter() - started:.1f} s)")
    return EngineChoice("openvino", model_dir, Path(entry["path"]), precision, settings.labels_max_pixels,
                        precision_note)


@worker_init.connect
def check_environment_and_model(sender: Any = None, **_: Any) -> None:
    """The main process's checks. Celery's signal dispatch swallows a receiver's error,
    so a failure is also kept for the pool processes, which stop the worker naming it."""
    global _startup_failure
    try:
        _check_environment_and_model(sender)
    except BaseException as exc:
        _startup_failure = str(exc) if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
        raise


def _check_environment_and_model(sender: Any) -> None:
    from worker.selfcheck import run_checks

    settings = worker_settings
    concurrency = getattr(sender, "concurrency", resource_plan.concurrency)
    _note(f"Resource plan: {resource_plan.describe()}; running {concurrency} process(es) "
          f"(WORKER_CONCURRENCY / TORCH_THREADS override); process tuning: {process_tuning.describe()}")

    problems = run_checks()
    if problems:
        raise SystemExit("m2fp worker cannot start, inference stack self-check failed:\n  - "
                         + "\n  - ".join(problems))
    global _engine_choice
    try:
        model_dir = resolve_model_dir(settings)
    except ModelUnavailable as exc:
        raise SystemExit(f"m2fp worker cannot start: {exc}") from None
    _note(f"self-check OK; model directory {model_dir}")
    _engine_choice = choose_engine(settings, model_dir)
    serve_metrics(settings)
    start_sweeper(settings)
    start_consumption_guard(settings)


def start_sweeper(settings: Settings) -> None:
    """This worker takes its turn at the stranded-job sweep (worker/sweeper.py)."""
    from common.services import Services
    from worker import sweeper

    sweeper.start(Services.create(settings))
    _note(f"stranded-job sweep every {settings.sweep_interval_seconds:g} s across the fleet (a process silent "
          f"for {settings.stranded_after_seconds:g} s is gone)")


def start_consumption_guard(settings: Settings) -> None:
    """This worker shuts down if it stops taking jobs while jobs wait (worker/consumption_guard.py)."""
    from common.services import Services
    from worker import consumption_guard

    consumption_guard.start(Services.create(settings))


def serve_metrics(settings: Settings) -> None:
    """The endpoint of all this worker's model processes, from its main process, with
    what an earlier run left in the metrics directory gone (pool processes are not
    forked yet; this process's own files, opened at import, stay)."""
    from worker import metrics

    clear_metrics_dir(metrics_dir, keep_pid=os.getpid())
    if settings.worker_metrics_port:
        metrics.serve(settings.worker_metrics_port)
        _note(f"metrics on port {settings.worker_metrics_port} (WORKER_METRICS_PORT)")


@celeryd_after_setup.connect
def report_startup(**_: Any) -> None:
    for level, note in _startup_notes:
        log.log(level, note)


POSE_FIX = ("the pose model is MediaPipe's, installed with `pip install --no-deps mediapipe==0.10.14` after "
            "requirements/worker.txt (make venv does both)")


def _load_pose() -> Any:
    """The pose engine, loaded with the model so a broken install stops the worker at start,
    not at its first keypoints job."""
    from worker.mediapipe_pose import MediaPipePose

    return MediaPipePose()


@worker_process_init.connect
def load_engine(**_: Any) -> None:
    import torch

    from common.services import Services
    from worker.context import WorkerProcess, process_name, set_process
    from worker.engine_loading import load_engine
    from worker.heartbeat import Heartbeat

    settings = worker_settings
    torch.set_num_threads(resource_plan.threads)
    started = time.perf_counter()
    choice = _engine_choice
    loading = "the M2FP model"
    try:
        if choice is None:
            raise RuntimeError(_startup_failure or "worker_init did not run in the main worker process")
        engine = load_engine(choice, settings.inference_max_side, resource_plan.threads,
                             fallback=settings.m2fp_engine == "auto")
        loading = "the pose model"
        pose = _load_pose()
    except Exception:
        if choice is None:
            log.critical("m2fp worker cannot start: %s; stopping the worker", _startup_failure
                         or "worker_init did not run in the main worker process")
        elif loading == "the pose model":
            log.critical("cannot load the pose model (%s); stopping the worker", POSE_FIX, exc_info=True)
        else:
            log.critical("cannot load the M2FP model from %s; stopping the worker", choice.model_dir, exc_info=True)
        # A pool process that dies at start is respawned forever; stop the whole worker.
        os.kill(os.getppid(), signal.SIGTERM)
        os._exit(1)
    services = Services.create(settings)
    heartbeat = Heartbeat(services.queue.processes, process_name(), settings.worker_heartbeat_seconds)
    set_process(WorkerProcess(services, engine, heartbeat, pose))
    heartbeat.start()
    log.info("worker process %d ready: %s engine (%s), model %s loaded in %.1f s, %d thread(s)",
             os.getpid(), engine.description["engine"], engine.description["precision"], choice.model_dir,
             time.perf_counter() - started, resource_plan.threads)


@worker_process_shutdown.connect
def stop_counting_as_live(pid: int, **_: Any) -> None:
    """A model process exited: it no longer counts in the live gauges (busy processes),
    nor among the processes that serve the queue (ETAs)."""
    mark_process_dead(pid)
    from worker.context import current_process

    try:
        current_process().heartbeat.stop()
    except RuntimeError:  # never loaded its model: it never beat
        log.debug("process %d had no heartbeat to stop", pid)
