"""JSON shapes of a job as clients see it (the contract other tools rely on)."""
from __future__ import annotations

from typing import Any

from flask import url_for

from common.jobs import Job, JobStatus
from api.deps import ApiDeps


def job_view(job: Job, deps: ApiDeps) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job.id,
        "status": job.status.value,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
        "priority": job.priority,
        "worker": job.worker,
        "input": {**job.input, **({"source": f"s3://{job.source['bucket']}/{job.source['key']}"} if job.source else {})},
        "links": {"self": url_for("jobs.get_job", job_id=job.id, _external=True)},
    }
    if job.status is JobStatus.SUCCEEDED and job.result:
        body["result"] = {
            "outputs": {name: _link(job.id, name, key, deps) for name, key in job.result["outputs"].items()},
            "keys": job.result["outputs"],  # where each output lives in the store
            "summary": job.result["summary"],
        }
    if job.status is JobStatus.FAILED and job.error:
        body["error"] = job.error
    if job.last_error and not job.status.terminal:
        body["last_error"] = job.last_error
    return body


def _link(job_id: str, name: str, key: str, deps: ApiDeps) -> str:
    """A presigned URL when the store can sign one, else the API's own output route."""
    url = deps.storage.presigned_url(key, deps.settings.presign_seconds)
    return url or url_for("jobs.get_output", job_id=job_id, name=name, _external=True)
