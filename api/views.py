"""A job record as clients see it: :class:`common.schema.JobView`, with its links."""
from __future__ import annotations

from typing import Optional

from flask import url_for

from common.jobs import Job, JobStatus
from common.queue import Place
from common.schema import ErrorDetail, InputView, JobLinks, JobView, QueuePlace, ResultView
from common.services import Services


def waiting_places(jobs: list[Job], services: Services) -> dict[str, Place]:
    """The queue place of each queued job among ``jobs``, in one Redis round trip."""
    return services.queue.places([(job.id, job.priority) for job in jobs if job.status is JobStatus.QUEUED])


def job_view(job: Job, services: Services, deduplicated: Optional[bool] = None,
             places: Optional[dict[str, Place]] = None) -> JobView:
    """``places``: from :func:`waiting_places` when rendering many jobs, else looked up."""
    place = (waiting_places([job], services) if places is None else places).get(job.id)
    result = None
    if job.status is JobStatus.SUCCEEDED and job.result:
        result = ResultView(
            outputs={name: _link(job.id, name, key, services) for name, key in job.result.outputs.items()},
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
        worker=job.worker,
        input=InputView(**job.input.model_dump(), source=job.source.uri() if job.source else None),
        links=JobLinks(self_=url_for("jobs.get_job", job_id=job.id, _external=True)),
        result=result,
        error=ErrorDetail(**job.error.model_dump()) if job.status is JobStatus.FAILED and job.error else None,
        last_error=ErrorDetail(**job.last_error.model_dump()) if job.last_error and not job.status.terminal else None,
        deduplicated=deduplicated,
        cancel_requested=True if job.cancel_requested and job.status is JobStatus.RUNNING else None,
        queue=QueuePlace(position=place.position, ahead=place.ahead, eta_seconds=place.eta_seconds) if place else None,
    )


def _link(job_id: str, name: str, key: str, services: Services) -> str:
    """A presigned URL when the store can sign one, else the API's own output route."""
    url = services.storage.presigned_url(key, services.settings.presign_seconds)
    return url or url_for("jobs.get_output", job_id=job_id, name=name, _external=True)
