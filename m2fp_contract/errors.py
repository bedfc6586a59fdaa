"""Stable error codes shared by the API responses and failed job records.

Clients branch on ``code``; the message is for humans and may change.
"""
from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    # The client's mistakes (4xx, or a job that fails without retry)
    MISSING_IMAGE = "missing_image"
    INVALID_IMAGE = "invalid_image"
    IMAGE_TOO_LARGE = "image_too_large"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BAD_REQUEST = "bad_request"
    INVALID_SOURCE = "invalid_source"
    SOURCE_FORBIDDEN = "source_forbidden"
    SOURCE_NOT_FOUND = "source_not_found"
    SOURCE_CHANGED = "source_changed"
    BATCH_TOO_LARGE = "batch_too_large"
    QUEUE_FULL = "queue_full"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"
    NOT_CANCELABLE = "not_cancelable"
    INVALID_WEBHOOK = "invalid_webhook"
    UNKNOWN_OUTPUT = "unknown_output"
    INVALID_KEYPOINTS = "invalid_keypoints"
    PERSON_NOT_FOUND = "person_not_found"
    NO_PERSON = "no_person"
    WEBHOOKS_DISABLED = "webhooks_disabled"
    REQUEST_TIMEOUT = "request_timeout"
    # The service's own faults (5xx, or a job that failed after retries)
    QUEUE_UNAVAILABLE = "queue_unavailable"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    INPUT_MISSING = "input_missing"
    INFERENCE_TIMEOUT = "inference_timeout"
    WORKER_LOST = "worker_lost"
    INTERNAL_ERROR = "internal_error"



class ServiceError(Exception):
    """An error with a stable code, raised where it is detected and rendered once."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InputRejected(ServiceError):
    """The job's input cannot be used, and asking again will not change that: the
    API answers 4xx, a worker fails the job without retrying."""

    code = ErrorCode.INVALID_SOURCE


class InvalidImage(InputRejected):
    """The bytes are not an image we can parse, or exceed the limits."""

    code = ErrorCode.INVALID_IMAGE


class StorageUnavailable(ServiceError):
    """The object store could not be reached or refused the operation (transient)."""

    code = ErrorCode.STORAGE_UNAVAILABLE


class ObjectNotFound(ServiceError):
    """The key does not exist in the store."""

    code = ErrorCode.NOT_FOUND
