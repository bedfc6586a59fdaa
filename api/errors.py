"""Every error the API returns, rendered in one place as JSON with a stable code.

Body: ``{"error": {"code": ..., "message": ...}}``. 4xx for the client's mistakes,
5xx only for the service's own faults. :data:`ERROR_CODES` is the one table of
which status each code answers with (the OpenAPI document lists it), and a batch
item's error renders through the same :func:`error_body` as a whole request's.
"""
from __future__ import annotations

import logging
from typing import NamedTuple, Optional

import redis
from flask import Flask, Response, jsonify, request
from kombu.exceptions import OperationalError
from werkzeug.exceptions import ClientDisconnected, HTTPException

from m2fp_contract.errors import ErrorCode, ObjectNotFound, ServiceError, StorageUnavailable
from m2fp_contract.schema import MAX_BATCH
from api.server import RequestTimedOut

log = logging.getLogger(__name__)



class CodeInfo(NamedTuple):
    status: Optional[int]  # None: only a failed job's ``error`` carries it
    when: str


# The one table of error codes: the status each answers with, and when it happens. The
# OpenAPI document lists it; docs/api.md's table says the same.
ERROR_CODES: dict[ErrorCode, CodeInfo] = {
    ErrorCode.BAD_REQUEST: CodeInfo(400, "the request does not match its schema (see the message)"),
    ErrorCode.MISSING_IMAGE: CodeInfo(400, "no `image` file in a multipart body"),
    ErrorCode.INVALID_SOURCE: CodeInfo(400, "a reference that is malformed (not s3://bucket/key)"),
    ErrorCode.INVALID_WEBHOOK: CodeInfo(400, "a webhook URL that is not https, names a private or local address "
                                             "the operator did not allow (WEBHOOK_ALLOW_HOSTS), or unknown "
                                             "webhook_events"),
    ErrorCode.WEBHOOKS_DISABLED: CodeInfo(400, "a webhook (or the webhook secret) asked of a service whose operator "
                                               "set no WEBHOOK_SIGNING_KEY"),
    ErrorCode.UNKNOWN_OUTPUT: CodeInfo(400, "an `outputs` name that is not one of keypoints, masks, garments, tryon"),
    ErrorCode.INVALID_KEYPOINTS: CodeInfo(400, "`keypoints` that are not OpenPose JSON of COCO-18 or BODY_25 points "
                                          "inside the photo, with confidences from 0 to 1"),
    ErrorCode.SOURCE_FORBIDDEN: CodeInfo(403, "a reference outside S3_BUCKET and SOURCE_BUCKETS, or to job files"),
    ErrorCode.UNAUTHORIZED: CodeInfo(401, "no API key, or not a valid one, while the service has keys "
                                          "configured"),
    ErrorCode.NOT_FOUND: CodeInfo(404, "no such job (unknown, expired, or another tenant's), output or route"),
    ErrorCode.SOURCE_NOT_FOUND: CodeInfo(404, "the referenced object does not exist (also a job's error when "
                                              "it is deleted before the job ran)"),
    ErrorCode.METHOD_NOT_ALLOWED: CodeInfo(405, "the route exists, the method does not"),
    ErrorCode.NOT_CANCELABLE: CodeInfo(409, "a cancel of a job that already ended (succeeded, failed or canceled)"),
    ErrorCode.REQUEST_TIMEOUT: CodeInfo(408, "the request did not arrive in time: API_REQUEST_TIMEOUT seconds, "
                                             "plus 1 s per API_UPLOAD_MIN_RATE bytes sent; the connection is closed"),
    ErrorCode.PAYLOAD_TOO_LARGE: CodeInfo(413, "upload (or referenced object) above MAX_UPLOAD_BYTES, or a multipart "
                                               "batch above MAX_BATCH_BYTES"),
    ErrorCode.IMAGE_TOO_LARGE: CodeInfo(413, "more than MAX_SIDE px on a side or MAX_PIXELS in all"),
    ErrorCode.BATCH_TOO_LARGE: CodeInfo(413, f"more than {MAX_BATCH} items in a batch, or more than the API key's "
                                             "submissions per minute (it could never be admitted)"),
    ErrorCode.INVALID_IMAGE: CodeInfo(422, "not decodable, empty, truncated or corrupt (also a job's error "
                                           "when the stored input cannot be decoded)"),
    ErrorCode.QUEUE_FULL: CodeInfo(429, "a backfill submission while BACKFILL_MAX_QUEUED backfill jobs wait; "
                                        "honour Retry-After"),
    ErrorCode.RATE_LIMITED: CodeInfo(429, "this API key's submissions per minute are spent; honour Retry-After"),
    ErrorCode.INTERNAL_ERROR: CodeInfo(500, "a bug of the service (also a job's error when the worker failed "
                                            "on it); see the log"),
    ErrorCode.QUEUE_UNAVAILABLE: CodeInfo(503, "Redis is down or hung; retry after Retry-After (the same photo "
                                                "gets the same job if it was created before the fault)"),
    ErrorCode.STORAGE_UNAVAILABLE: CodeInfo(503, "the store is down; nothing was accepted; retry after Retry-After"),
    ErrorCode.SOURCE_CHANGED: CodeInfo(None, "a job's error: the referenced object changed after submission"),
    ErrorCode.INPUT_MISSING: CodeInfo(None, "a job's error: its uploaded input vanished from the store"),
    ErrorCode.INFERENCE_TIMEOUT: CodeInfo(None, "a job's error: parsing exceeded the time limit"),
    ErrorCode.PERSON_NOT_FOUND: CodeInfo(None, "a job's error: try-on outputs for a `person` the photo does not "
                                         "have (persons.png numbers them 1..N by area)"),
    ErrorCode.NO_PERSON: CodeInfo(None, "a job's error: try-on outputs asked of a photo in which nobody was found"),
    ErrorCode.WORKER_LOST: CodeInfo(None, "a job's error: its worker died MAX_ATTEMPTS times running it"),
}
assert set(ERROR_CODES) == set(ErrorCode), "every error code is in the table"
HTTP_STATUS: dict[ErrorCode, int] = {code: info.status for code, info in ERROR_CODES.items() if info.status}
# Codes werkzeug raises as HTTP exceptions (routing, body size), by status.
_HTTP_EXCEPTION_CODES = {400: ErrorCode.BAD_REQUEST, 404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED,
                         413: ErrorCode.PAYLOAD_TOO_LARGE}
# Seconds a client should wait before trying again, sent as Retry-After (the page and the
# client honour it): a full queue drains, an outage of Redis or the store is waited out.
RETRY_AFTER_SECONDS = {ErrorCode.QUEUE_FULL: 5, ErrorCode.QUEUE_UNAVAILABLE: 5, ErrorCode.STORAGE_UNAVAILABLE: 5}


class ApiError(ServiceError):
    """Raised by views for a client error that has no richer exception type."""


def public_error(exc: ServiceError) -> ServiceError:
    """What a client may learn of an error: outages and missing objects without the
    internal detail (bucket names, endpoints) their messages carry for operators."""
    if isinstance(exc, StorageUnavailable):
        return ServiceError("storage is unavailable; retry later", ErrorCode.STORAGE_UNAVAILABLE)
    if isinstance(exc, ObjectNotFound):
        return ServiceError("no such object", ErrorCode.NOT_FOUND)
    if exc.code not in HTTP_STATUS:  # a job-only code raised in a request: a bug of ours
        return ServiceError("internal error", ErrorCode.INTERNAL_ERROR)
    return exc


def error_body(exc: ServiceError) -> tuple[dict, int]:
    """The JSON body and HTTP status of an error, for a whole request or a batch item."""
    shown = public_error(exc)
    return {"code": shown.code.value, "message": shown.message}, HTTP_STATUS[shown.code]


def error_response(exc: ServiceError) -> Response:
    body, status = error_body(exc)
    if status >= 500:
        log.error("%s: %s", exc.code.value, exc.message)
    response = jsonify({"error": body})
    response.status_code = status
    retry_after = getattr(exc, "retry_after", None) or RETRY_AFTER_SECONDS.get(exc.code)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    if exc.code is ErrorCode.UNAUTHORIZED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="m2fp"'
    return response


def failed_job_response(code: str, message: str) -> Response:
    """A failed job's error as a request's answer (the demo's synchronous routes): its
    code's status, or 422 for the codes only a job carries (worker_lost, no_person, ...).
    The message was written for clients when the job failed."""
    known = ErrorCode(code)
    response = jsonify({"error": {"code": known.value, "message": message}})
    response.status_code = ERROR_CODES[known].status or 422
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError):
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _HTTP_EXCEPTION_CODES.get(status, ErrorCode.BAD_REQUEST if status < 500 else ErrorCode.INTERNAL_ERROR)
        message = exc.description or exc.name
        if status == 413 and request.max_content_length:
            message = f"the request body is larger than this route accepts ({request.max_content_length} bytes)"
        response = error_response(ServiceError(message, code))
        if status == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(ClientDisconnected)
    def _body_cut_short(exc: ClientDisconnected):
        # Werkzeug raises this for any failed read of the body, with the cause as context:
        # a read past the request's deadline (api.server) is the client's slowness.
        if isinstance(exc.__context__, RequestTimedOut):
            return _timed_out(exc.__context__)
        return error_response(ServiceError("the request body ended before its length: the client went away",
                                           ErrorCode.BAD_REQUEST))

    @app.errorhandler(RequestTimedOut)
    def _timed_out(exc: RequestTimedOut):
        return error_response(ServiceError(f"{exc}: send it faster, or in smaller requests",
                                           ErrorCode.REQUEST_TIMEOUT))

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def _queue_down(exc: Exception):
        log.error("queue unavailable: %s", exc)
        return error_response(ServiceError("the job queue is unavailable; retry later", ErrorCode.QUEUE_UNAVAILABLE))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(ServiceError("internal error", ErrorCode.INTERNAL_ERROR))
