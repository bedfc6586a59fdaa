"""The production worker app with the tests' fault injection added:
``celery -A tests.harness.worker_app worker``.

Each pool process loads its engine exactly as in production (``worker.startup``);
this module's handlers run after that one and wrap the engine in a
:class:`HoldingEngine` when ``M2FP_TEST_HOLD_FILE`` names a hold file, or make every
parse fail and the first failure write meet a Redis error when
``M2FP_TEST_UNRECORDABLE_FAILURE`` names a marker file, or parse each photo of a
scripted size to a hand-made label map when ``M2FP_TEST_SCRIPTED_PARSE`` names some.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init, worker_ready

from tests.harness import (HOLD_FILE_VARIABLE, SCRIPTED_PARSE_VARIABLE, STOP_CONSUMING_VARIABLE,
                           UNRECORDABLE_FAILURE_VARIABLE)
from tests.harness.faults import ExplodingEngine, FailureWriteFailsOnce
from tests.harness.holding_engine import HoldingEngine
from tests.harness.scripted_engine import ScriptedEngine
from worker.celery_app import app  # noqa: F401  (the app Celery runs)
from worker.context import current_process, set_process


@worker_process_init.connect
def hold_jobs_on_request(**_: Any) -> None:
    hold_file = os.environ.get(HOLD_FILE_VARIABLE)
    if hold_file:
        loaded = current_process()
        set_process(dataclasses.replace(loaded, engine=HoldingEngine(loaded.engine, Path(hold_file))))


@worker_process_init.connect
def parse_as_scripted_on_request(**_: Any) -> None:
    maps = os.environ.get(SCRIPTED_PARSE_VARIABLE)
    if maps:
        loaded = current_process()
        paths = [Path(path) for path in maps.split(os.pathsep)]
        set_process(dataclasses.replace(loaded, engine=ScriptedEngine(loaded.engine, paths)))


@worker_process_init.connect
def fail_unrecordably_on_request(**_: Any) -> None:
    marker = os.environ.get(UNRECORDABLE_FAILURE_VARIABLE)
    if marker:
        loaded = current_process()
        jobs = FailureWriteFailsOnce(loaded.services.jobs, Path(marker))
        set_process(dataclasses.replace(loaded, engine=ExplodingEngine(loaded.engine),
                                        services=dataclasses.replace(loaded.services, jobs=jobs)))


@worker_ready.connect
def stop_consuming_on_request(sender: Any = None, **_: Any) -> None:
    """Cancel the consumer's subscriptions under the worker (not through Celery's
    ``cancel_consumer`` control, which also takes the queues off the worker's list): it
    stays up and connected, still meant to consume its queues, and fetches nothing."""
    if os.environ.get(STOP_CONSUMING_VARIABLE):
        sender.task_consumer.cancel()
