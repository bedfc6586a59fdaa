"""A job record as clients see it, :class:`m2fp_contract.schema.JobView`: one renderer for the
API's answers and the bodies of webhook deliveries, so both always say the same."""
from __future__ import annotations

from typing import Optional

from common.jobs import Job, JobStatus
from common.queue import Place
from m2fp_contract.schema import ErrorDetail, InputView, JobLinks, JobView, QueuePlace, ResultView, WebhookView
from common.storage import Storage


def job_view(job: Job, storage: Storage, presign_seconds: int, base_url: str, deduplicated: Optional[bool] = None,
             place: Optional[Place] = None) -> JobView:
    """``base_url``: the API's root as the client reached it (``http://host:port/``); the
    job's links start with it. ``place``: where the job waits, when it is queued."""
    root = f"{base_url.rstrip('/')}/v1/jobs/{job.id}"
    result = None
    if job.status is JobStatus.SUCCEEDED and job.result:
        result = ResultView(
            # A presigned URL when the store can sign one, else the API's own output route.
            outputs={name: storage.presigned_url(key, presign_seconds) or f"{root}/outputs/{name}"
                     for name, key in job.result.outputs.items()},
            keys=job.result.outputs,  # where each output lives in the store
            summary=job.result.summary,
        )
    return JobView(
        id=job.id,
        status=job.status,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        priority=job.priority,
        labels=job.output.labels,
        labels_format=job.output.labels_format,
        outputs=job.output.outputs,
        person=job.output.person,
        worker=job.worker,
        input=InputView(**job.input.model_dump(), source=job.source.uri() if job.source else None),
        links=JobLinks(self_=root),
        result=result,
        error=ErrorDetail(**job.error.model_dump()) if job.status is JobStatus.FAILED and job.error else None,
        last_error=ErrorDetail(**job.last_error.model_dump()) if job.last_error and not job.status.terminal else None,
        deduplicated=deduplicated,
        cancel_requested=True if job.cancel_requested and job.status is JobStatus.RUNNING else None,
        queue=QueuePlace(position=place.position, ahead=place.ahead, eta_seconds=place.eta_seconds) if place else None,
        webhook=WebhookView(**job.webhook.model_dump(exclude={"links_base"})) if job.webhook else None,
    )
