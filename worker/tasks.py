"""The Celery task: thin, it maps the job runner's outcomes onto Celery's retries.

Every outcome is recorded in the job's record before its message is acknowledged. A
failure that cannot even be recorded (Redis errs at that moment) hands the message
back instead (:class:`~celery.exceptions.Reject` with requeue), so it comes back to a
worker; what no message brings back, the sweeper (worker/sweeper.py) finds.
"""
from __future__ import annotations

import logging
import random
from typing import Optional

import redis
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded

from m2fp_contract.errors import ErrorCode, StorageUnavailable
from common.celery_factory import PARSE_TASK
from common.jobs import InvalidTransition, Job, JobError
from common.services import Services
from worker.celery_app import app, settings
from worker import metrics
from worker.context import WorkerProcess, current_process
from worker.job_runner import fail, run_job

log = logging.getLogger(__name__)

# What a client reads while its job waits out an outage (the details go to the log).
WAITING_MESSAGES = {
    ErrorCode.STORAGE_UNAVAILABLE: "the object store was unavailable; the job waits and is tried again",
    ErrorCode.QUEUE_UNAVAILABLE: "the job store was unavailable; the job waits and is tried again",
}


def backoff_seconds(retries: int, cap: int) -> float:
    """Exponential backoff with full jitter: up to 2, 4, 8 ... s, capped."""
    return random.uniform(1, min(cap, 2 ** (retries + 1)))


class ParseTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """A hard time limit kills the pool process; Celery reports it here, in the
        main worker process, where the job must still be marked failed. If that cannot
        be recorded, the job stays ``running`` under a process that is gone, which is
        exactly what the sweeper looks for."""
        if isinstance(exc, TimeLimitExceeded) and args:
            try:
                fail(Services.create(settings), args[0], ErrorCode.INFERENCE_TIMEOUT,
                     f"parsing was stopped after {settings.task_time_limit} s; try a smaller image")
            except (InvalidTransition, KeyError, redis.RedisError):
                log.exception("could not mark job %s as timed out; the sweeper will find it", args[0])


def _fail_or_hand_back(services: Services, job_id: str, code: ErrorCode, message: str) -> Job:
    """Record the failure; if Redis errs, the message goes back rather than being acked."""
    try:
        return fail(services, job_id, code, message)
    except redis.RedisError as exc:
        log.warning("job %s: could not record its failure (%s); handing its message back", job_id, code.value,
                    exc_info=True)
        raise Reject(exc, requeue=True) from None


@app.task(name=PARSE_TASK, bind=True, base=ParseTask, max_retries=None)
def parse(self, job_id: str) -> Optional[str]:
    process = current_process()
    process.heartbeat.working_on(job_id)
    try:
        return _parse(self, process, job_id)
    finally:
        process.heartbeat.working_on(None)


def _parse(task: Task, process: WorkerProcess, job_id: str) -> Optional[str]:
    services = process.services
    try:
        with metrics.BUSY.track_inprogress():
            job = run_job(services, process.engine, job_id, worker=task.request.hostname,
                          message_id=task.request.id, process=process.heartbeat.name, pose=process.pose)
    except SoftTimeLimitExceeded:
        job = _fail_or_hand_back(services, job_id, ErrorCode.INFERENCE_TIMEOUT,
                                 f"parsing took longer than {settings.task_soft_time_limit} s; try a smaller image")
    except (StorageUnavailable, redis.RedisError) as exc:
        # Transient: the job waits (queued) and runs again; it is never dropped.
        code = ErrorCode.STORAGE_UNAVAILABLE if isinstance(exc, StorageUnavailable) else ErrorCode.QUEUE_UNAVAILABLE
        log.warning("job %s: %s (%s); retrying", job_id, code.value, exc)
        metrics.count_job("retried", code)
        try:
            services.jobs.requeue(job_id, JobError.of(code, WAITING_MESSAGES[code]))
        except (redis.RedisError, InvalidTransition):
            pass  # Redis is down (the message still holds the job), or the record never left "queued"
        try:
            raise task.retry(exc=exc, countdown=backoff_seconds(task.request.retries, settings.retry_backoff_max))
        except Reject:
            # Celery could not publish the retry (Redis is down) and would drop this message;
            # hand it back instead: requeued now, or redelivered after the visibility timeout.
            raise Reject(exc, requeue=True) from None
    except Exception:
        # A bug or a model error on this input: fail the job, keep the worker serving.
        log.exception("job %s failed unexpectedly", job_id)
        job = _fail_or_hand_back(services, job_id, ErrorCode.INTERNAL_ERROR,
                                 "the worker failed on this job; its operator can find the cause in the worker's "
                                 "log under the job's id")
    return job.status.value if job else None
