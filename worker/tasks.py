"""The Celery task: thin, it maps the job runner's outcomes onto Celery's retries."""
from __future__ import annotations

import random
from typing import Optional

import redis
from celery.exceptions import SoftTimeLimitExceeded

from common.errors import ErrorCode, StorageUnavailable
from common.jobs import JobStatus
from worker.celery_app import PARSE_TASK, app, settings
from worker.context import get_context
from worker.job_runner import fail, run_job


def backoff_seconds(retries: int, cap: int) -> float:
    """Exponential backoff with full jitter: 2, 4, 8 ... s, capped, randomised."""
    return random.uniform(1, min(cap, 2 ** (retries + 1)))


@app.task(name=PARSE_TASK, bind=True, max_retries=None)
def parse(self, job_id: str) -> Optional[str]:
    ctx = get_context()
    try:
        job = run_job(ctx, job_id)
    except SoftTimeLimitExceeded:
        job = fail(ctx, job_id, ErrorCode.INFERENCE_TIMEOUT,
                   f"parsing took longer than {settings.task_soft_time_limit} s; try a smaller image")
    except (StorageUnavailable, redis.RedisError) as exc:
        # Transient: the job waits (queued) and runs again; it is never dropped.
        try:
            code = ErrorCode.STORAGE_UNAVAILABLE if isinstance(exc, StorageUnavailable) else ErrorCode.QUEUE_UNAVAILABLE
            ctx.jobs.transition(job_id, JobStatus.QUEUED, last_error={"code": code.value, "message": str(exc)})
        except redis.RedisError:
            pass  # Redis itself is down: the retry below (or redelivery) still holds the job
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries, settings.retry_backoff_max))
    return job.status.value if job else None
