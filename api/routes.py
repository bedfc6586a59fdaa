"""The job endpoints: submit one or many, poll one or many, download an output.

Requests arrive validated against :mod:`m2fp_contract.schema` (``api.openapi``); each
submission, whatever its encoding, becomes a :data:`~api.submission.Submission` and
goes through :func:`~api.submission.accept`.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Optional

from flask import Blueprint, Response, current_app, g, request
from pydantic import ValidationError
from spectree import Response as Responses

from m2fp_contract.errors import ErrorCode as E
from m2fp_contract.errors import ServiceError
from common.jobs import (InvalidTransition, Job, JobStatus, OutputOptions, Priority, Webhook, is_job_id,
                         output_key)
from m2fp_contract.schema import (DEFAULT_WEBHOOK_EVENTS, MAX_BATCH, BatchForm, BatchItem, BatchItemResult, BatchJson,
                           BatchResponse, JobsQuery, JobsResponse, JobView, MissingJob, SubmitForm, SubmitJson,
                           output_media_type)
from common.services import Services
from common.webhooks import WebhookPolicy
from api.auth import KeyRing, Principal, presented_key
from api.errors import ApiError, error_body
from api.openapi import errors, spec, validation_failed
from api.submission import Accepted, Submission, Upload, accept, check_capacity
from api.views import job_view, waiting_places
from api.waiting import preferred_wait, wait_for_job

jobs = Blueprint("jobs", __name__, url_prefix="/v1/jobs")

_OUTAGES = (E.QUEUE_UNAVAILABLE, E.STORAGE_UNAVAILABLE)
_SUBMIT_ERRORS = (E.BAD_REQUEST, E.UNAUTHORIZED, E.MISSING_IMAGE, E.INVALID_SOURCE, E.INVALID_WEBHOOK,
                  E.UNKNOWN_OUTPUT, E.INVALID_KEYPOINTS,
                  E.WEBHOOKS_DISABLED, E.SOURCE_FORBIDDEN, E.SOURCE_NOT_FOUND, E.PAYLOAD_TOO_LARGE, E.IMAGE_TOO_LARGE,
                  E.INVALID_IMAGE, E.QUEUE_FULL, E.RATE_LIMITED, E.REQUEST_TIMEOUT, *_OUTAGES)
# Every job route needs the caller's key once keys are configured.
SECURITY = [{"bearer": []}, {"apiKey": []}]


def services() -> Services:
    return current_app.extensions["m2fp"]


def caller() -> Principal:
    return g.caller


@jobs.before_request
def identify_caller() -> None:
    """Every job route knows its caller (401 for a missing or unknown key), before its
    request body is even read."""
    keys: KeyRing = current_app.extensions["m2fp.keys"]
    g.caller = keys.identify(presented_key(request.headers.get("Authorization"), request.headers.get("X-API-Key")))


def _submitting(body: SubmitJson | SubmitForm | BatchJson | BatchForm, photos: int = 1) -> Optional[Webhook]:
    """What every submission request passes first: its webhook, backpressure, then the
    key's rate (a token per photo, at least one per request). A request these refuse
    costs no token; a photo refused after them (undecodable, a missing source, an outage)
    has spent its own. The webhook its jobs get, if it names one."""
    webhook = _webhook(body)
    check_capacity(services(), body.priority)
    current_app.extensions["m2fp.limiter"].take(caller(), cost=max(1, photos))
    return webhook


def _output(body: SubmitJson | SubmitForm | BatchJson | BatchForm) -> OutputOptions:
    return OutputOptions.of(body.labels, body.labels_format, body.outputs, body.person, body.keypoints)


def _webhook(body: SubmitJson | SubmitForm | BatchJson | BatchForm) -> Optional[Webhook]:
    if body.webhook is None:
        if body.webhook_events:
            raise ApiError("webhook_events without a webhook: name the URL in `webhook`", E.INVALID_WEBHOOK)
        return None
    if not services().settings.webhook_signing_key:
        raise ApiError("this service sends no webhooks: its operator has not set WEBHOOK_SIGNING_KEY",
                       E.WEBHOOKS_DISABLED)
    policy: WebhookPolicy = current_app.extensions["m2fp.webhook_policy"]
    events = list(dict.fromkeys(body.webhook_events or DEFAULT_WEBHOOK_EVENTS))
    return Webhook(url=policy.admit(body.webhook), events=events, links_base=request.url_root)


def _accepted_view(accepted: Accepted) -> dict:
    return job_view(accepted.job, services(), deduplicated=not accepted.created).to_json()


@jobs.post("")
@spec.validate(json=SubmitJson, form=SubmitForm, tags=["jobs"], security=SECURITY, resp=Responses(
    HTTP_202=(JobView, "a new job, queued"),
    HTTP_200=(JobView, "this content already had a job: that job (`deduplicated: true`)"),
    **errors(*_SUBMIT_ERRORS)))
def create_job():
    """Submit one photo

    An upload (multipart field `image`) or a reference (JSON `source`), with an optional
    `priority` (`interactive` by default) and `webhook` (with `webhook_events`). 202 with
    the new job, or 200 with the job that already has this content (same sha256), which
    gets the webhook only if it has none and has not ended; `Location` names the job.
    With `Prefer: wait=N` the answer waits up to N seconds (at most SYNC_WAIT_SECONDS)
    for the job to end: 200 with the ended job, else 202 with the job as it stands
    (`Preference-Applied` says the wait that was honoured).
    """
    body = request.context.json or request.context.form
    submission: Submission = body.source if request.context.json is not None else Upload(body.image.stream)
    webhook = _submitting(body)
    accepted = accept(services(), submission, body.priority, caller(), webhook, _output(body))
    g.submission_created = accepted.created  # for the metrics: a waited answer's 200 may be a new job
    headers = {"Location": job_path(accepted.job.id)}
    wait = preferred_wait(request.headers.get("Prefer"), services().settings.sync_wait_seconds)
    if wait is None:
        return _accepted_view(accepted), 202 if accepted.created else 200, headers
    job, waited = wait_for_job(services(), accepted.job, wait)
    if waited:
        headers["Preference-Applied"] = f"wait={wait:g}"
    view = job_view(job, services(), deduplicated=not accepted.created).to_json()
    return view, 200 if job.status.terminal or not accepted.created else 202, headers


def job_path(job_id: str) -> str:
    """The job's path, behind a proxy under its path prefix (a ``Location``)."""
    return f"{request.script_root}/v1/jobs/{job_id}"


@jobs.post("/batch")
@spec.validate(json=BatchJson, form=BatchForm, tags=["jobs"], security=SECURITY, resp=Responses(
    HTTP_200=(BatchResponse, "one answer per item, in order: its job (status 202 or 200) or its own error"),
    **errors(*_SUBMIT_ERRORS, E.BATCH_TOO_LARGE)))
def create_jobs():
    """Submit many photos

    JSON `{"items": [{"source": ..., "ref": ...}], "priority": ...}` or multipart with
    several `image` files (each file's name is echoed back as its `ref`). Default
    priority `backfill`; a `webhook` serves every item's job. A client error fails only
    its item; an outage fails the request (503), and sending it again is safe: content
    already accepted returns its job.
    """
    batch = request.context.json or request.context.form
    if request.context.json is not None:
        work: list[tuple[Optional[str], Submission | ServiceError]] = [_batch_item(item) for item in batch.items]
    else:
        work = [(upload.filename, Upload(upload.stream, upload.filename)) for upload in batch.image]
    webhook = _submitting(batch, photos=len(work))
    outcomes = _accept_each([submission for _, submission in work], batch.priority, webhook, _output(batch))
    results = []
    for (ref, _), outcome in zip(work, outcomes):
        if isinstance(outcome, ServiceError):
            body, status = error_body(outcome)
            results.append(BatchItemResult(ref=ref, status=status, error=body))
        else:
            results.append(BatchItemResult(ref=ref, status=202 if outcome.created else 200,
                                           job=_accepted_view(outcome)))
    return BatchResponse(items=results).model_dump(mode="json", by_alias=True)


def _accept_each(work: list[Submission | ServiceError], priority: Priority, webhook: Optional[Webhook],
                 output: OutputOptions) -> list[Accepted | ServiceError]:
    """Each item through :func:`accept`, BATCH_READ_CONCURRENCY at a time (an item mostly
    waits on the store: its read, then its input's write), answered in the request's
    order: its job, or the client error that fails only it. An outage (5xx) or an
    unexpected error fails the request: items not started by then are never started,
    and those under way finish first (sending the batch again is safe)."""
    own, who = services(), caller()

    def one(submission: Submission | ServiceError) -> Accepted | ServiceError:
        if isinstance(submission, ServiceError):
            return submission
        try:
            return accept(own, submission, priority, who, webhook, output)
        except ServiceError as exc:
            if error_body(exc)[1] >= 500:
                raise
            return exc

    threads = max(1, min(len(work), own.settings.batch_read_concurrency))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="batch-item") as pool:
        futures = [pool.submit(one, submission) for submission in work]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
        if failed is not None:
            for future in futures:
                future.cancel()
            raise failed.exception()
        return _first_creates([future.result() for future in futures])


def _first_creates(outcomes: list[Accepted | ServiceError]) -> list[Accepted | ServiceError]:
    """The first item naming a job this batch created answers 202, its repeats 200.

    Items run concurrently, so which of two identical photos won the content claim is
    chance; the answer should not be: in request order, the first one made the job."""
    created = {o.job.id for o in outcomes if isinstance(o, Accepted) and o.created}
    seen: set[str] = set()
    answered: list[Accepted | ServiceError] = []
    for outcome in outcomes:
        if isinstance(outcome, Accepted) and outcome.job.id in created:
            outcome = dataclasses.replace(outcome, created=outcome.job.id not in seen)
            seen.add(outcome.job.id)
        answered.append(outcome)
    return answered


def _batch_item(item: dict) -> tuple[Optional[str], Submission | ServiceError]:
    """One JSON item: its reference, or the error that fails only this item."""
    ref = item.get("ref") if isinstance(item.get("ref"), str) else None
    try:
        return ref, BatchItem.model_validate(item).source
    except ValidationError as exc:
        return ref, validation_failed(exc)


@jobs.get("")
@spec.validate(query=JobsQuery, tags=["jobs"], security=SECURITY, resp=Responses(
    HTTP_200=(JobsResponse, "the jobs, in the order asked; unknown, expired or another tenant's ids as "
                            "`not_found` entries"),
    **errors(E.BAD_REQUEST, E.UNAUTHORIZED, E.QUEUE_UNAVAILABLE)))
def get_jobs():
    """Poll many jobs

    `GET /v1/jobs?ids=a,b,c` (at most 100 ids), for pollers of many jobs.
    """
    ids = [i for i in request.context.query.ids.split(",") if i]
    if not ids or len(ids) > MAX_BATCH:
        raise ApiError(f"pass 1 to {MAX_BATCH} comma-separated job ids in ?ids=", E.BAD_REQUEST)
    found = [job if job and caller().owns(job.tenant) else None
             for job in services().jobs.get_many([i if is_job_id(i) else "-" for i in ids])]
    places = waiting_places([job for job in found if job], services())
    return JobsResponse(jobs=[job_view(job, services(), places=places) if job else MissingJob(id=job_id)
                              for job_id, job in zip(ids, found)]).model_dump(mode="json", by_alias=True)


def _find(job_id: str) -> Job:
    """The caller's job; another tenant's answers exactly as an unknown id does."""
    job = services().jobs.get(job_id) if is_job_id(job_id) else None
    if job is None or not caller().owns(job.tenant):
        raise ApiError(f"no job {job_id!r} (unknown, or expired)", E.NOT_FOUND)
    return job


@jobs.get("/<job_id>")
@spec.validate(tags=["jobs"], security=SECURITY, path_parameter_descriptions={
    "job_id": "the id a submission answered"},
    resp=Responses(HTTP_200=(JobView, "the job"), **errors(E.UNAUTHORIZED, E.NOT_FOUND, E.QUEUE_UNAVAILABLE)))
def get_job(job_id: str):
    """Poll one job"""
    return job_view(_find(job_id), services()).to_json()


@jobs.post("/<job_id>/cancel")
@spec.validate(tags=["jobs"], security=SECURITY, path_parameter_descriptions={
    "job_id": "the id a submission answered"}, resp=Responses(
    HTTP_200=(JobView, "the job, `canceled` (it was still queued)"),
    HTTP_202=(JobView, "the job, still `running` with `cancel_requested: true`: it ends `canceled` at its next "
                       "safe point (before inference, or before its outputs are stored)"),
    **errors(E.UNAUTHORIZED, E.NOT_FOUND, E.NOT_CANCELABLE, E.QUEUE_UNAVAILABLE)))
def cancel_job(job_id: str):
    """Cancel a job

    A queued job is canceled at once (its queue message is dropped when a worker sees
    it); a running job is stopped at its next safe point and publishes no outputs; a
    job that already ended answers `409 not_cancelable`. A canceled job's content may
    be submitted again.
    """
    _find(job_id)
    try:
        job = services().jobs.request_cancel(job_id)
        if job.status is JobStatus.CANCELED:
            services().queue.taken(job_id)
    except InvalidTransition as exc:
        raise ApiError(f"{exc}: only a queued or running job can be canceled", E.NOT_CANCELABLE) from None
    except KeyError:  # expired in between
        raise ApiError(f"no job {job_id!r} (unknown, or expired)", E.NOT_FOUND) from None
    return job_view(job, services()).to_json(), 200 if job.status is JobStatus.CANCELED else 202


@jobs.get("/<job_id>/outputs/<path:name>")
@spec.validate(tags=["jobs"], security=SECURITY, path_parameter_descriptions={
    "job_id": "the id a submission answered"},
    # Published as one path per output, each with its media type and body (api.openapi.OUTPUT_ROUTE).
    resp=Responses(HTTP_200=(None, "the output file"),
                   **errors(E.UNAUTHORIZED, E.NOT_FOUND, E.QUEUE_UNAVAILABLE, E.STORAGE_UNAVAILABLE)))
def get_output(job_id: str, name: str):
    """Download one output of a finished job

    With the local store; with S3 the job's `result.outputs` links straight to the bucket.
    """
    job = _find(job_id)
    media_type = output_media_type(name)
    if media_type is None or not job.result or name not in job.result.outputs:
        raise ApiError(f"job {job_id} has no output {name!r} (yet)", E.NOT_FOUND)
    data = services().storage.get(output_key(job_id, name))
    return Response(data, mimetype=media_type, headers={"Cache-Control": "private, max-age=3600"})
