"""Every error the API returns, rendered in one place as JSON with a stable code.

Body: ``{"error": {"code": ..., "message": ...}}``. 4xx for the client's mistakes,
5xx only for the service's own faults.
"""
from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from common.errors import ErrorCode, ObjectNotFound, ServiceError, StorageUnavailable

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}
# Every code the API can answer with; anything else is the service's own fault (500).
_SERVICE_STATUS = {
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.QUEUE_UNAVAILABLE: 503,
    ErrorCode.INVALID_SOURCE: 400,
    ErrorCode.SOURCE_FORBIDDEN: 403,
    ErrorCode.SOURCE_NOT_FOUND: 404,
    ErrorCode.BATCH_TOO_LARGE: 413,
    ErrorCode.QUEUE_FULL: 429,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    ErrorCode.MISSING_IMAGE: 400,
    ErrorCode.INVALID_IMAGE: 422,
    ErrorCode.IMAGE_TOO_LARGE: 413,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.BAD_REQUEST: 400,
}


class ApiError(ServiceError):
    """Raised by views for a client error that has no richer exception type."""


def status_for(exc: ServiceError) -> int:
    """The HTTP status of a service error: 4xx for the client's mistakes, 503 for outages."""
    if isinstance(exc, ObjectNotFound):
        return 404
    return _SERVICE_STATUS.get(exc.code, 500)


def error_response(code: ErrorCode, message: str, status: int):
    response = jsonify({"error": {"code": code.value, "message": message}})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError):
        if isinstance(exc, StorageUnavailable):
            log.error("storage unavailable: %s", exc.message)
            return error_response(exc.code, "storage is unavailable; retry later", 503)
        if isinstance(exc, ObjectNotFound):
            return error_response(ErrorCode.NOT_FOUND, "no such object", 404)
        status = status_for(exc)
        if status >= 500:
            log.error("service error %s: %s", exc.code.value, exc.message)
        response = error_response(exc.code, exc.message, status)
        if exc.code is ErrorCode.QUEUE_FULL:
            response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, ErrorCode.BAD_REQUEST if status < 500 else ErrorCode.INTERNAL_ERROR)
        response = error_response(code, exc.description or exc.name, status)
        if status == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def _queue_down(exc: Exception):
        log.error("queue unavailable: %s", exc)
        return error_response(ErrorCode.QUEUE_UNAVAILABLE, "the job queue is unavailable; retry later", 503)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(ErrorCode.INTERNAL_ERROR, "internal error", 500)
