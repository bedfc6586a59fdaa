"""The job endpoints: submit, poll, download an output."""
from __future__ import annotations

from flask import Blueprint, Response, request

from common.errors import ErrorCode
from common.jobs import OUTPUTS, output_key, is_job_id
from api.deps import deps
from api.errors import ApiError
from api.submission import submit_image
from api.views import job_view

jobs = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


@jobs.post("")
def create_job():
    upload = request.files.get("image")
    if upload is None:
        raise ApiError("send the image as multipart/form-data in the field 'image'", ErrorCode.MISSING_IMAGE)
    limit = deps().settings.max_upload_bytes
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise ApiError(f"the image is larger than {limit} bytes", ErrorCode.PAYLOAD_TOO_LARGE)
    job = submit_image(deps(), data)
    body = job_view(job, deps())
    return body, 202, {"Location": f"/v1/jobs/{job.id}"}


def _find(job_id: str):
    job = deps().jobs.get(job_id) if is_job_id(job_id) else None
    if job is None:
        raise ApiError(f"no job {job_id!r} (unknown, or expired)", ErrorCode.NOT_FOUND)
    return job


@jobs.get("/<job_id>")
def get_job(job_id: str):
    return job_view(_find(job_id), deps())


@jobs.get("/<job_id>/outputs/<name>")
def get_output(job_id: str, name: str):
    job = _find(job_id)
    if name not in OUTPUTS or not job.result or name not in job.result["outputs"]:
        raise ApiError(f"job {job_id} has no output {name!r} (yet)", ErrorCode.NOT_FOUND)
    data = deps().storage.get(output_key(job_id, name))
    return Response(data, mimetype=OUTPUTS[name],
                    headers={"Cache-Control": "private, max-age=3600"})
