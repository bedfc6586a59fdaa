"""A job record as this request's client sees it: :func:`common.views.job_view`, with
links to the address the client used."""
from __future__ import annotations

from typing import Optional

from flask import request

from common.jobs import Job, JobStatus
from common.queue import Place
from m2fp_contract.schema import JobView
from common.services import Services
from common.views import job_view as render


def waiting_places(jobs: list[Job], services: Services) -> dict[str, Place]:
    """The queue place of each queued job among ``jobs``, in one Redis round trip."""
    return services.queue.places([(job.id, job.priority) for job in jobs if job.status is JobStatus.QUEUED])


def job_view(job: Job, services: Services, deduplicated: Optional[bool] = None,
             places: Optional[dict[str, Place]] = None) -> JobView:
    """``places``: from :func:`waiting_places` when rendering many jobs, else looked up."""
    place = (waiting_places([job], services) if places is None else places).get(job.id)
    return render(job, services.storage, services.settings.presign_seconds, request.url_root,
                  deduplicated=deduplicated, place=place)
