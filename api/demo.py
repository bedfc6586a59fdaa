"""The M2FP demo's own routes, so its clients can point at this service unchanged.

The demo is a Flask app with the model inside: ``POST /api/parse`` (a photo in the field
``file``) answers the colored map as a PNG, ``POST /parse`` (field ``image``) answers
``{status, num_persons, results: [{label, confidence, mask_base64}],
colored_mask_base64}``. Here each request is a job like any other (same keys, tenants,
limits and deduplication), waited for up to SYNC_WAIT_SECONDS; a job that takes longer
is answered as ``POST /v1/jobs`` answers (202, the job, ``Location``), to be polled, so
no request holds a thread for as long as a backlog lasts.
"""
from __future__ import annotations

import base64

from flask import Blueprint, Response, current_app, g, request

from api.errors import failed_job_response
from api.openapi import MediaResponse, errors, spec
from api.routes import SECURITY, caller, identify_caller, job_path, services
from api.submission import Upload, accept
from api.views import job_view
from api.waiting import wait_for_job
from common.jobs import Job, JobStatus, OutputOptions, Priority, output_key
from common.labels import class_slug
from m2fp_contract.errors import ErrorCode as E
from m2fp_contract.schema import (DemoFileForm, DemoImageForm, DemoParseResult, DemoPart, JobView, LabelProfile,
                                  LabelsFormat, OutputGroup)

demo = Blueprint("demo", __name__)
demo.before_request(identify_caller)

_ERRORS = (E.BAD_REQUEST, E.UNAUTHORIZED, E.MISSING_IMAGE, E.PAYLOAD_TOO_LARGE, E.IMAGE_TOO_LARGE, E.INVALID_IMAGE,
           E.RATE_LIMITED, E.REQUEST_TIMEOUT, E.QUEUE_UNAVAILABLE, E.STORAGE_UNAVAILABLE)
_LATER = (JobView, "not finished within SYNC_WAIT_SECONDS: the job, to poll at `Location` (as POST /v1/jobs answers)")


def _run(upload: Upload, output: OutputOptions) -> Job:
    """The photo as the caller's interactive job, waited for."""
    current_app.extensions["m2fp.limiter"].take(caller(), cost=1)
    accepted = accept(services(), upload, Priority.INTERACTIVE, caller(), None, output)
    g.submission_created = accepted.created
    return wait_for_job(services(), accepted.job, services().settings.sync_wait_seconds)[0]


def _unfinished(job: Job):
    """A job that failed answers with its error (its code's status, 422 for the codes only
    a job carries); one still queued or running, with itself (202)."""
    if job.status is JobStatus.FAILED and job.error:
        return failed_job_response(job.error.code, job.error.message)
    return job_view(job, services()).to_json(), 202, {"Location": job_path(job.id)}


def _output(job: Job, name: str) -> bytes:
    return services().storage.get(output_key(job.id, name))


@demo.post("/api/parse")
@spec.validate(form=DemoFileForm, tags=["demo"], security=SECURITY, resp=MediaResponse(
    HTTP_200=(None, "colored.png of the finished job"), HTTP_202=_LATER, **errors(*_ERRORS),
    media={"200": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}))
def api_parse():
    """Parse a photo, answer its colored map (the M2FP demo's route)

    Multipart field `file`. Waits for the job up to SYNC_WAIT_SECONDS: 200 with
    colored.png, or 202 with the job to poll. A job that failed answers with its error.
    """
    job = _run(Upload(request.context.form.file.stream), OutputOptions())
    if job.status is not JobStatus.SUCCEEDED:
        return _unfinished(job)
    return Response(_output(job, "colored.png"), mimetype="image/png", headers={"Location": job_path(job.id)})


@demo.post("/parse")
@spec.validate(form=DemoImageForm, tags=["demo"], security=SECURITY, resp=MediaResponse(
    HTTP_200=(DemoParseResult, "the parts found, each with its mask, and the colored map"), HTTP_202=_LATER,
    **errors(*_ERRORS)))
def parse():
    """Parse a photo, answer its parts as JSON (the M2FP demo's route)

    Multipart field `image`. Waits for the job up to SYNC_WAIT_SECONDS: 200 with the
    demo's JSON (one base64 PNG mask per part found, and the colored map), or 202 with
    the job to poll. A job that failed answers with its error.
    """
    output = OutputOptions.of(LabelProfile.CIHP, LabelsFormat.GRAYSCALE, [OutputGroup.MASKS])
    job = _run(Upload(request.context.form.image.stream), output)
    if job.status is not JobStatus.SUCCEEDED:
        return _unfinished(job)
    summary = job.result.summary

    def encoded(name: str) -> str:
        return base64.b64encode(_output(job, name)).decode("ascii")

    parts = [DemoPart(label=found["name"], confidence=found["score"],
                      mask_base64=encoded(f"masks/{class_slug(found['name'])}.png"))
             for found in summary["classes"] if found["id"] != 0]
    return DemoParseResult(status="success", num_persons=summary["persons"] or 0, results=parts,
                           colored_mask_base64=encoded("colored.png"), job_id=job.id).model_dump(mode="json")
