"""The job endpoints: submit one or many, poll one or many, download an output."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from common.errors import ErrorCode, ServiceError
from common.jobs import MAX_BATCH, OUTPUTS, is_job_id, output_key
from api.deps import deps
from api.errors import ApiError, status_for
from api.submission import (Accepted, check_capacity, parse_priority, parse_source, submit_reference,
                            submit_upload)
from api.views import job_view

jobs = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError("the body is not a JSON object", ErrorCode.BAD_REQUEST)
    return body


def _read(upload) -> bytes:
    limit = deps().settings.max_upload_bytes
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise ApiError(f"the image is larger than {limit} bytes", ErrorCode.PAYLOAD_TOO_LARGE)
    return data


def _accepted_view(accepted: Accepted) -> dict[str, Any]:
    return {**job_view(accepted.job, deps()), "deduplicated": not accepted.created}


@jobs.post("")
def create_job():
    """One job: an upload (multipart field ``image``) or a reference (JSON ``source``).

    202 for a new job; 200 with the existing job when this content was already submitted.
    """
    if request.is_json:
        body = _json_body()
        if "source" not in body:
            raise ApiError('send {"source": "s3://bucket/key"} or a multipart image', ErrorCode.INVALID_SOURCE)
        priority = parse_priority(body.get("priority"))
        check_capacity(deps(), priority)
        accepted = submit_reference(deps(), parse_source(body["source"], deps()), priority)
    else:
        upload = request.files.get("image")
        if upload is None:
            raise ApiError("send the image as multipart/form-data in the field 'image'", ErrorCode.MISSING_IMAGE)
        priority = parse_priority(request.form.get("priority"))
        check_capacity(deps(), priority)
        accepted = submit_upload(deps(), _read(upload), priority)
    return _accepted_view(accepted), 202 if accepted.created else 200, {"Location": f"/v1/jobs/{accepted.job.id}"}


@jobs.post("/batch")
def create_jobs():
    """Many jobs in one request (default priority ``backfill``), each answered on its own.

    JSON ``{"items": [{"source": ..., "ref": ...}], "priority": ...}`` or multipart with
    several ``image`` files (each file's name is echoed back as its ``ref``, nothing
    more). A client error fails only its item; an outage fails the request (503), and
    re-sending it is safe: content already accepted returns its existing job.
    """
    if request.is_json:
        body = _json_body()
        items = body.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ApiError('send {"items": [{"source": ..., "ref": ...}, ...]}', ErrorCode.BAD_REQUEST)
        priority = parse_priority(body.get("priority"), default="backfill")
        work = [(item.get("ref"), lambda item=item: submit_reference(
            deps(), parse_source(item.get("source"), deps()), priority)) for item in items]
    else:
        uploads = request.files.getlist("image")
        if not uploads:
            raise ApiError("send images as multipart/form-data fields named 'image'", ErrorCode.MISSING_IMAGE)
        priority = parse_priority(request.form.get("priority"), default="backfill")
        work = [(upload.filename, lambda upload=upload: submit_upload(deps(), _read(upload), priority))
                for upload in uploads]
    if len(work) > MAX_BATCH:
        raise ApiError(f"at most {MAX_BATCH} items per batch", ErrorCode.BATCH_TOO_LARGE)
    check_capacity(deps(), priority)
    results = []
    for ref, submit in work:
        try:
            accepted = submit()
        except ServiceError as exc:
            if status_for(exc) >= 500:
                raise
            results.append({"ref": ref, "status": status_for(exc),
                            "error": {"code": exc.code.value, "message": exc.message}})
            continue
        results.append({"ref": ref, "status": 202 if accepted.created else 200, "job": _accepted_view(accepted)})
    return {"items": results}


@jobs.get("")
def get_jobs():
    """Several jobs at once: ``GET /v1/jobs?ids=a,b,c`` (at most 100), for pollers of many."""
    ids = [i for i in request.args.get("ids", "").split(",") if i]
    if not ids or len(ids) > MAX_BATCH:
        raise ApiError(f"pass 1 to {MAX_BATCH} comma-separated job ids in ?ids=", ErrorCode.BAD_REQUEST)
    found = deps().jobs.get_many([i if is_job_id(i) else "-" for i in ids])
    return {"jobs": [job_view(job, deps()) if job else {"id": job_id, "status": "not_found"}
                     for job_id, job in zip(ids, found)]}


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
    return Response(data, mimetype=OUTPUTS[name], headers={"Cache-Control": "private, max-age=3600"})
