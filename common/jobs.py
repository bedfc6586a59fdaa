"""The job record and its state machine: what a client polls, owned by the service.

Celery's result backend cannot tell "unknown" from "waiting" (both read PENDING),
so the service keeps its own record per job, with an explicit state machine. Each
arrow is one lifecycle step of :class:`common.job_store.JobStore`, and nothing else
writes a record:

    create ──> queued ──start──> running ──succeed──> succeeded
                  │                │  ^
                  │                │  └── start: redelivered after its worker died
                  │                ├──requeue──> queued (waiting out a transient error)
                  │                └──recover──> queued (its process stopped heartbeating:
                  │                               the sweeper, worker/sweeper.py)
                  ├────────────────┴──fail────> failed
                  └──cancel──> canceled <──stop── running (at a safe point, once
                                                  request_cancel marked it)

    promote: a queued backfill job gets interactive priority (no change of state)
    request_cancel: a running job is marked; its worker stops it at the next safe
                    point (before inference, or before storing outputs)
    subscribe: a job that has no webhook gets one (a deduplicated submission's)
    record_delivery: a webhook delivery attempt's outcome (no change of state)

``succeeded``, ``failed`` and ``canceled`` are terminal. This module holds the record's
parts and the transitions; the store, the content index and the webhook outbox each
have their own module.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import typing
from datetime import datetime, timezone
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from m2fp_contract.errors import ErrorCode
from m2fp_contract.schema import (JOB_ID_PATTERN, MAX_BATCH, OUTPUTS, TERMINAL_STATUSES, JobStatus, LabelProfile,
                           LabelsFormat, OutputGroup, Priority, SourceRef, WebhookEvent,
                           output_media_type)

__all__ = ["DEFAULT_TENANT", "MAX_BATCH", "OUTPUTS", "TERMINAL_STATUSES", "JobStatus", "Priority", "SourceRef",
           "InputInfo", "JobResult", "JobError", "OutputOptions", "Webhook", "Delivery", "Job", "InvalidTransition",
           "RunsUnderAnotherMessage", "new_job_id", "is_job_id", "input_key", "output_key", "utcnow", "TRANSITIONS",
           "may_move", "check_transition", "REUSABLE_STATUSES"]

log = logging.getLogger(__name__)

_JOB_ID = re.compile(JOB_ID_PATTERN)

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


# A job in these states answers for its content: the same bytes are not parsed again.
REUSABLE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED})


class InvalidTransition(Exception):
    """A state change the machine above does not allow (e.g. leaving a terminal state)."""


class RunsUnderAnotherMessage(InvalidTransition):
    """A worker tried to start a job that another message already started: two messages
    for one job (a move to the interactive queue, a sweeper's resend in a race) reached
    two workers at once, and only the first start may run it."""


def new_job_id() -> str:
    """128 random bits, URL-safe: unguessable, so knowing one id reveals no other.

    An id never begins with ``-``: one in 64 did, and command lines (``m2fp status``,
    shell tools) read such an argument as an option. Drawing again keeps the bits uniform
    over the ids that remain."""
    while (job_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return job_id


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.fullmatch(value))  # match() would take a trailing newline ($)


def may_move(status: JobStatus, to: JobStatus) -> bool:
    """The one place that asks :data:`TRANSITIONS` whether ``status`` may move to ``to``."""
    return to in TRANSITIONS[status]


def check_transition(job: "Job", to: JobStatus) -> None:
    """:class:`InvalidTransition` unless the machine lets ``job`` move to ``to``."""
    if not may_move(job.status, to):
        raise InvalidTransition(f"job {job.id}: {job.status.value} -> {to.value}")


def input_key(job_id: str) -> str:
    return f"jobs/{job_id}/input"


def output_key(job_id: str, name: str) -> str:
    if output_media_type(name) is None:
        raise ValueError(f"unknown output {name!r}")
    return f"jobs/{job_id}/{name}"


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Part(BaseModel):
    # A misspelled field is an error, never silently dropped on save.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputInfo(_Part):
    """What the API learnt of the image when it accepted it."""

    width: int
    height: int
    format: str
    bytes: int
    sha256: str


class JobError(_Part):
    code: str
    message: str

    @classmethod
    def of(cls, code: ErrorCode, message: str) -> "JobError":
        return cls(code=code.value, message=message)


class JobResult(_Part):
    outputs: dict[str, str]  # output name -> storage key
    summary: dict[str, Any]  # what the worker found (worker/outputs.py)


# Raised when a job's set of outputs changes, so that older jobs stop answering for new
# submissions of their content (2: persons.png and the people list).
OUTPUTS_VERSION = 2


class OutputOptions(_Part):
    """Which outputs a job has and how they are expressed: ``labels``, ``labels_format``,
    ``outputs``, ``person`` and ``keypoints`` of its submission."""

    labels: LabelProfile = LabelProfile.CIHP
    labels_format: LabelsFormat = LabelsFormat.GRAYSCALE
    outputs: list[OutputGroup] = Field(default_factory=list)  # in OutputGroup's order, tryon bringing keypoints
    person: Optional[int] = Field(None, ge=1, le=255)  # whose try-on pack (None: the largest)
    keypoints: Optional[list[list[float]]] = None  # submitted OpenPose points, one flat list per person

    @classmethod
    def of(cls, labels: LabelProfile, labels_format: LabelsFormat, outputs: list[OutputGroup],
           person: Optional[int] = None, keypoints: Optional[list[list[float]]] = None) -> "OutputOptions":
        """The options of a submission, its groups in one order (``["masks", "tryon"]`` and
        ``["tryon", "masks"]`` are the same work) and with what ``tryon`` needs."""
        wanted = set(outputs) | ({OutputGroup.KEYPOINTS} if OutputGroup.TRYON in outputs else set())
        return cls(labels=labels, labels_format=labels_format, outputs=[g for g in OutputGroup if g in wanted],
                   person=person, keypoints=keypoints)

    def wants(self, group: OutputGroup) -> bool:
        return group in self.outputs

    def content_key(self, digest: str) -> str:
        """What identifies the work in the content index: the input's hash, the options (the
        same photo in two label sets is two jobs) and the outputs' version (a job made
        before persons.png existed does not answer for one that has it). Extra outputs,
        their person and submitted keypoints (by hash) are part of the work too; a job
        without them keeps the key it always had."""
        key = f"{digest}:{OUTPUTS_VERSION}:{self.labels.value}:{self.labels_format.value}"
        if not self.outputs:
            return key
        points = hashlib.sha256(json.dumps(self.keypoints).encode()).hexdigest()[:16] if self.keypoints else "-"
        return f"{key}:{'+'.join(g.value for g in self.outputs)}:{self.person or 1}:{points}"


class Delivery(_Part):
    """The outcome of one attempt at delivering a webhook event."""

    delivered: bool
    status: Optional[int] = None  # the receiver's HTTP status, when it answered
    error: Optional[str] = None  # why the attempt failed
    next_attempt_at: Optional[str] = None  # None: delivered, or given up


class Webhook(_Part):
    """Where the job's events go, and how its latest event's delivery stands."""

    url: str
    events: list[WebhookEvent]
    links_base: str  # the API's address as the submitter used it: links in the body start with it
    event: Optional[WebhookEvent] = None
    delivery_id: Optional[str] = None  # the webhook-id of the latest event's delivery
    delivered: bool = False
    attempts: int = Field(0, ge=0)
    last_status: Optional[int] = None
    last_error: Optional[str] = None
    next_attempt_at: Optional[str] = None

    def begin(self, event: WebhookEvent) -> "Webhook":
        """A new event: a fresh delivery (a new webhook-id), not yet attempted."""
        return Webhook(url=self.url, events=self.events, links_base=self.links_base, event=event,
                       delivery_id=new_job_id())

    def attempted(self, delivery: Delivery) -> "Webhook":
        """Noted after an attempt; once delivered it stays so (a late duplicate attempt
        that failed does not undo a delivery)."""
        return self.model_copy(update={
            "delivered": self.delivered or delivery.delivered, "attempts": self.attempts + 1, "last_status": delivery.status,
            "last_error": delivery.error, "next_attempt_at": delivery.next_attempt_at})


# The tenant of every job when the service runs without API keys (and of records
# written before tenants existed).
DEFAULT_TENANT = "default"


class Job(_Part):
    id: str
    tenant: str = DEFAULT_TENANT  # who submitted it; no other tenant can see it
    status: JobStatus
    created_at: str
    updated_at: str
    input: InputInfo
    source: Optional[SourceRef] = None  # set when submitted by reference
    priority: Priority = Priority.INTERACTIVE
    output: OutputOptions = OutputOptions()
    worker: Optional[str] = None  # Celery node that last started it
    message_id: Optional[str] = None  # the queue message (Celery task id) that last started it
    process: Optional[str] = None  # the model process (its heartbeat name) that last started it
    attempts: int = Field(0, ge=0)  # times a worker started it
    lost: int = Field(0, ge=0)  # times its worker died mid-job (found still running at a restart)
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    result: Optional[JobResult] = None
    error: Optional[JobError] = None  # why it failed (terminal)
    last_error: Optional[JobError] = None  # a transient error it is waiting out
    cancel_requested: bool = False  # running, and to be stopped at its next safe point
    webhook: Optional[Webhook] = None  # told of the job's changes (common.webhooks)

    def to_redis(self, fields: Optional[set[str]] = None) -> dict[str, str]:
        """One JSON value per field (all, or only ``fields``), as the Redis hash holds them."""
        values = self.model_dump(mode="json", include=fields)
        return {name: json.dumps(value) for name, value in values.items()}

    @classmethod
    def from_redis(cls, values: dict[bytes, bytes]) -> "Job":
        """The record as Redis holds it, without the fields this process does not know: a
        newer process may have added some, and every read of the job must not fail on
        them. (Writes still refuse unknown fields: a step's misspelled field is an error.)"""
        return cls.model_validate(_known_fields(cls, {k.decode(): json.loads(v) for k, v in values.items()}))


def _nested_model(annotation: Any) -> Optional[type[BaseModel]]:
    """The model a field holds (``Optional[Webhook]`` -> ``Webhook``), if it holds one."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is None and isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _known_fields(model: type[BaseModel], data: Any) -> Any:
    """``data`` without the keys ``model`` has no field for, at every level of nested models."""
    if not isinstance(data, dict):
        return data
    known = {}
    for name, value in data.items():
        field = model.model_fields.get(name)
        if field is None:
            log.debug("%s: ignoring the field %r (written by a newer process?)", model.__name__, name)
            continue
        nested = _nested_model(field.annotation)
        known[name] = _known_fields(nested, value) if nested else value
    return known
