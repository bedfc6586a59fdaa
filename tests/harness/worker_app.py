"""The production worker app with the tests' fault injection added:
``celery -A tests.harness.worker_app worker``.

Each pool process loads its engine exactly as in production (``worker.startup``);
this module's handler runs after that one and wraps the engine in a
:class:`HoldingEngine` when ``M2FP_TEST_HOLD_FILE`` names a hold file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init

from tests.harness import HOLD_FILE_VARIABLE
from tests.harness.holding_engine import HoldingEngine
from worker.celery_app import app  # noqa: F401  (the app Celery runs)
from worker.context import WorkerProcess, current_process, set_process


@worker_process_init.connect
def hold_jobs_on_request(**_: Any) -> None:
    hold_file = os.environ.get(HOLD_FILE_VARIABLE)
    if hold_file:
        loaded = current_process()
        set_process(WorkerProcess(loaded.services, HoldingEngine(loaded.engine, Path(hold_file))))
