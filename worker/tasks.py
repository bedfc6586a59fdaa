"""The Celery task: thin, it maps the job runner's outcomes onto Celery's retries."""
from __future__ import annotations

import logging
import random
from typing import Optional

import redis
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded

from m2fp_contract.errors import ErrorCode, StorageUnavailable
from common.jobs import InvalidTransition, JobError
from common.queue import PARSE_TASK
from common.services import Services
from worker.celery_app import app, settings
from worker import metrics
from worker.context import current_process
from worker.job_runner import fail, run_job

log = logging.getLogger(__name__)


def backoff_seconds(retries: int, cap: int) -> float:
    """Exponential backoff with full jitter: up to 2, 4, 8 ... s, capped."""
    return random.uniform(1, min(cap, 2 ** (retries + 1)))


class ParseTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """A hard time limit kills the pool process; Celery reports it here, in the
        main worker process, where the job must still be marked failed."""
        if isinstance(exc, TimeLimitExceeded) and args:
            try:
                fail(Services.create(settings), args[0], ErrorCode.INFERENCE_TIMEOUT,
                     f"parsing was stopped after {settings.task_time_limit} s")
            except (InvalidTransition, KeyError, redis.RedisError):
                log.exception("could not mark job %s as timed out", args[0])


@app.task(name=PARSE_TASK, bind=True, base=ParseTask, max_retries=None)
def parse(self, job_id: str) -> Optional[str]:
    process = current_process()
    services = process.services
    try:
        with metrics.BUSY.track_inprogress():
            job = run_job(services, process.engine, job_id, worker=self.request.hostname,
                          message_id=self.request.id)
    except SoftTimeLimitExceeded:
        job = fail(services, job_id, ErrorCode.INFERENCE_TIMEOUT,
                   f"parsing took longer than {settings.task_soft_time_limit} s; try a smaller image")
    except (StorageUnavailable, redis.RedisError) as exc:
        # Transient: the job waits (queued) and runs again; it is never dropped.
        code = ErrorCode.STORAGE_UNAVAILABLE if isinstance(exc, StorageUnavailable) else ErrorCode.QUEUE_UNAVAILABLE
        metrics.count_job("retried", code)
        try:
            services.jobs.requeue(job_id, JobError.of(code, str(exc)))
        except (redis.RedisError, InvalidTransition):
            pass  # Redis is down (the message still holds the job), or the record never left "queued"
        try:
            raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries, settings.retry_backoff_max))
        except Reject:
            # Celery could not publish the retry (Redis is down) and would drop this message;
            # hand it back instead: requeued now, or redelivered after the visibility timeout.
            raise Reject(exc, requeue=True) from None
    except Exception:
        # A bug or a model error on this input: fail the job, keep the worker serving.
        log.exception("job %s failed unexpectedly", job_id)
        job = fail(services, job_id, ErrorCode.INTERNAL_ERROR, "the worker failed on this job; see its log")
    return job.status.value if job else None
