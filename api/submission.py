"""Accepting a job: validate, store the input, create the record, enqueue, in that order.

The order matters: a worker may pick the job up the instant it is enqueued, so the
input and the record exist before; if enqueueing fails, both are removed again and
the client gets a 503 (nothing half-accepted is left behind).
"""
from __future__ import annotations

import logging

from common.images import inspect_image
from common.jobs import Job, input_key, new_job_id
from api.deps import ApiDeps

log = logging.getLogger(__name__)


def submit_image(deps: ApiDeps, data: bytes) -> Job:
    """Accept ``data`` as a new job and return its (queued) record."""
    info = inspect_image(data, deps.limits)
    job_id = new_job_id()
    deps.storage.put(input_key(job_id), data, content_type="application/octet-stream")
    job = Job.new(job_id, {"width": info.width, "height": info.height,
                           "format": info.format, "bytes": len(data)})
    try:
        deps.jobs.create(job)
        deps.enqueue(job_id)
    except Exception:
        log.exception("could not enqueue job %s; rolling it back", job_id)
        _discard(deps, job_id)
        raise
    log.info("job %s queued (%dx%d %s, %d bytes)", job_id, info.width, info.height, info.format, len(data))
    return job


def _discard(deps: ApiDeps, job_id: str) -> None:
    for undo in (lambda: deps.jobs.delete(job_id), lambda: deps.storage.delete(input_key(job_id))):
        try:
            undo()
        except Exception:  # best effort: the record expires and the input is unreferenced
            log.warning("rollback step failed for job %s", job_id, exc_info=True)
