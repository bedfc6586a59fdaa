"""The job record: what a client polls, owned by the service and kept in Redis.

Celery's result backend cannot tell "unknown" from "waiting" (both read PENDING),
so the service keeps its own record per job, with an explicit state machine. Each
arrow is one method of :class:`JobStore`, and nothing else writes a record:

    create ──> queued ──start──> running ──succeed──> succeeded
                  │                │  ^
                  │                │  └── start: redelivered after its worker died
                  │                └──requeue──> queued (waiting out a transient error)
                  ├────────────────┴──fail────> failed
                  └──cancel──> canceled <──stop── running (at a safe point, once
                                                  request_cancel marked it)

    promote: a queued backfill job gets interactive priority (no change of state)
    request_cancel: a running job is marked; its worker stops it at the next safe
                    point (before inference, or before storing outputs)
    subscribe: a job that has no webhook gets one (a deduplicated submission's)
    record_delivery: a webhook delivery attempt's outcome (no change of state)

A job with a webhook that arrives at one of the webhook's events (a status) begins
that event's delivery in the same write, and the store's ``on_event`` hook then sends
it (:mod:`common.webhooks`); every step above thus notifies, and none can forget to.
The same write puts the delivery in an outbox that its first attempt empties, so one
whose message never left (the process died, Redis blinked) is found and sent again.

``succeeded``, ``failed`` and ``canceled`` are terminal. Records expire
``job_ttl_seconds`` after their last change.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import time
import typing
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import redis
from pydantic import BaseModel, ConfigDict, Field
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from m2fp_contract.errors import ErrorCode
from m2fp_contract.schema import (JOB_ID_PATTERN, MAX_BATCH, OUTPUTS, TERMINAL_STATUSES, JobStatus, LabelProfile,
                           LabelsFormat, Priority, SourceRef, WebhookEvent)

__all__ = ["DEFAULT_TENANT", "MAX_BATCH", "OUTPUTS", "TERMINAL_STATUSES", "JobStatus", "Priority", "SourceRef", "InputInfo",
           "JobResult", "JobError", "OutputOptions", "Webhook", "Delivery", "Job", "JobStore", "InvalidTransition", "new_job_id", "is_job_id",
           "input_key", "output_key", "redis_client", "utcnow"]

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


class InvalidTransition(Exception):
    """A state change the machine above does not allow (e.g. leaving a terminal state)."""


def new_job_id() -> str:
    """128 random bits, URL-safe: unguessable, so knowing one id reveals no other."""
    return secrets.token_urlsafe(16)


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.match(value))


def _check(job: "Job", to: JobStatus) -> None:
    """The one place that asks :data:`TRANSITIONS` whether ``job`` may move to ``to``."""
    if to not in TRANSITIONS[job.status]:
        raise InvalidTransition(f"job {job.id}: {job.status.value} -> {to.value}")


def input_key(job_id: str) -> str:
    return f"jobs/{job_id}/input"


def output_key(job_id: str, name: str) -> str:
    if name not in OUTPUTS:
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
    """How a job's outputs are expressed (``labels`` and ``labels_format`` of its submission)."""

    labels: LabelProfile = LabelProfile.CIHP
    labels_format: LabelsFormat = LabelsFormat.GRAYSCALE

    def content_key(self, digest: str) -> str:
        """What identifies the work in the content index: the input's hash, the options (the
        same photo in two label sets is two jobs) and the outputs' version (a job made
        before persons.png existed does not answer for one that has it)."""
        return f"{digest}:{OUTPUTS_VERSION}:{self.labels.value}:{self.labels_format.value}"


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


def redis_client(url: str, socket_timeout: float = 10, retries: int = 6) -> redis.Redis:
    """A client that rides out a Redis restart: short timeouts, retried with backoff.

    Workers keep the defaults (a job may wait out a restart); the API passes a small
    budget so that a hung Redis gives its client a 503 well inside gunicorn's worker
    timeout instead of a killed worker and a dropped connection.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(5, socket_timeout),
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def _outbox_entry(job_id: str, delivery_id: str) -> str:
    return f"{job_id} {delivery_id}"


def _webhook_event(job: Job, status: Optional[JobStatus]) -> Optional[WebhookEvent]:
    """The event a move to ``status`` is for the job's webhook, if it asked for it."""
    if status is None or status == job.status or job.webhook is None:
        return None
    event = WebhookEvent(status.value) if status.value in WebhookEvent._value2member_map_ else None
    return event if event in job.webhook.events else None


# What a lifecycle step writes, given the record as it is: the fields to change, or
# None to leave the record alone.
_Change = Callable[[Job], Optional[dict[str, Any]]]


class JobStore:
    """Job records in Redis, one hash per job, changed only by the lifecycle steps below.

    ``on_event`` is called with the job after a step began a webhook delivery (see the
    module's docstring); its failure is logged, never raised: the step already happened.
    """

    def __init__(self, client: redis.Redis, ttl_seconds: int, prefix: str = "m2fp:job:",
                 on_event: Optional[Callable[[Job], None]] = None) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self.prefix = prefix
        self.content_prefix = prefix.replace(":job:", ":content:")
        self.outbox = prefix.replace(":job:", ":webhook-outbox")
        self.on_event = on_event

    def _key(self, job_id: str) -> str:
        return self.prefix + job_id

    # ---- reading -------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[Job]:
        values = self.client.hgetall(self._key(job_id))
        return Job.from_redis(values) if values else None

    def cancel_pending(self, job_id: str) -> bool:
        """Whether a cancel waits for this running job's next safe point (one field read)."""
        return self.client.hget(self._key(job_id), "cancel_requested") == b"true"

    def get_many(self, job_ids: list[str]) -> list[Optional[Job]]:
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self._key(job_id))
            return [Job.from_redis(values) if values else None for values in pipe.execute()]

    # ---- the lifecycle ---------------------------------------------------------------

    def create(self, job_id: str, input_info: InputInfo, priority: Priority,
               source: Optional[SourceRef] = None, tenant: str = DEFAULT_TENANT,
               webhook: Optional[Webhook] = None, output: Optional[OutputOptions] = None) -> Job:
        """A new ``queued`` job (its input is already stored, its message not yet sent).
        :class:`InvalidTransition` if a record with this id exists: it is never overwritten."""
        now = utcnow()
        job = Job(id=job_id, tenant=tenant, status=JobStatus.QUEUED, created_at=now, updated_at=now,
                  input=input_info, priority=priority, source=source, webhook=webhook,
                  output=output or OutputOptions())
        key = self._key(job.id)

        def transaction(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(key):
                raise InvalidTransition(f"job {job_id} already exists")
            pipe.multi()
            pipe.hset(key, mapping=job.to_redis())
            pipe.expire(key, self.ttl)

        self.client.transaction(transaction, key)
        return job

    def start(self, job_id: str, worker: Optional[str], message_id: Optional[str]) -> Job:
        """A worker takes the job: ``queued`` (or ``running``, when the worker that had it
        died, which counts as lost) -> ``running``."""
        return self._step(job_id, JobStatus.RUNNING, lambda job: {
            "started_at": utcnow(), "attempts": job.attempts + 1,
            "lost": job.lost + (job.status is JobStatus.RUNNING), "last_error": None,
            "worker": worker, "message_id": message_id})

    def requeue(self, job_id: str, error: JobError) -> Job:
        """``running`` -> ``queued``: a transient fault; its message comes back for a retry."""
        return self._step(job_id, JobStatus.QUEUED, lambda job: {"last_error": error})

    def succeed(self, job_id: str, result: JobResult) -> Job:
        """``running`` -> ``succeeded``, with the stored outputs; ``canceled`` instead
        (outputs unpublished) when a cancel arrived while they were being stored."""
        return self._step_unless_canceled(job_id, JobStatus.SUCCEEDED, lambda job: {
            "finished_at": utcnow(), "result": result})

    def request_cancel(self, job_id: str) -> Job:
        """A client withdraws the job: ``queued`` -> ``canceled`` at once; a running job is
        marked, and its worker stops it at the next safe point (:meth:`stop`).
        :class:`InvalidTransition` for a job that already ended."""
        def cancel(job: Job) -> Optional[dict[str, Any]]:
            if JobStatus.CANCELED not in TRANSITIONS[job.status]:  # now, or at the running job's safe point
                raise InvalidTransition(f"job {job_id} is {job.status.value}")
            if job.status is JobStatus.QUEUED:
                return {"status": JobStatus.CANCELED, "finished_at": utcnow(), "last_error": None}
            return {"cancel_requested": True}

        return self._apply(job_id, None, cancel)[0]

    def stop(self, job_id: str) -> Job:
        """``running`` -> ``canceled``: its worker reached a safe point after a cancel."""
        return self._step(job_id, JobStatus.CANCELED, lambda job: {"finished_at": utcnow()})

    def fail(self, job_id: str, error: JobError) -> Job:
        """``queued`` or ``running`` -> ``failed``, for good."""
        return self._step(job_id, JobStatus.FAILED, lambda job: {"finished_at": utcnow(), "error": error})

    def promote(self, job_id: str) -> Optional[Job]:
        """Give a waiting job interactive priority; None unless it was still waiting at a
        lower one (a worker took it meanwhile, or it already had it)."""
        def raise_priority(job: Job) -> Optional[dict[str, Any]]:
            if job.status is not JobStatus.QUEUED or job.priority is Priority.INTERACTIVE:
                return None
            return {"priority": Priority.INTERACTIVE}

        try:
            job, changed = self._apply(job_id, None, raise_priority)
        except KeyError:
            return None
        return job if changed else None

    def subscribe(self, job_id: str, webhook: Webhook) -> Job:
        """Give a job that has none the webhook of a later submission of the same content;
        a job that already has one, or already ended, keeps what it has."""
        def attach(job: Job) -> Optional[dict[str, Any]]:
            return None if job.webhook or job.status.terminal else {"webhook": webhook}

        return self._apply(job_id, None, attach)[0]

    def record_delivery(self, job_id: str, delivery_id: str, delivery: Delivery) -> Optional[Job]:
        """Note an attempt at delivering the job's latest event; an attempt at an earlier
        event (its job moved on meanwhile) leaves the record alone. None if it expired."""
        def note(job: Job) -> Optional[dict[str, Any]]:
            if job.webhook is None or job.webhook.delivery_id != delivery_id:
                return None
            if job.webhook.delivered and not delivery.delivered:
                return None  # a late duplicate attempt: the delivery already happened
            return {"webhook": job.webhook.attempted(delivery)}

        try:
            return self._apply(job_id, None, note)[0]
        except KeyError:
            return None

    def delivery_attempted(self, job_id: str, delivery_id: str) -> None:
        """The delivery reached its worker: it leaves the outbox."""
        self.client.zrem(self.outbox, _outbox_entry(job_id, delivery_id))

    def unsent_deliveries(self, older_than: float) -> list[tuple[str, str]]:
        """``(job id, delivery id)`` of deliveries begun over ``older_than`` seconds ago
        that no delivery worker has attempted; each is marked as just begun again, so
        the next look finds it only after another ``older_than``."""
        now = time.time()
        entries = self.client.zrangebyscore(self.outbox, "-inf", now - older_than)
        if entries:
            self.client.zadd(self.outbox, {entry: now for entry in entries}, xx=True)
        return [tuple(entry.decode().split(" ", 1)) for entry in entries]

    def delete(self, job_id: str) -> None:
        """Undo :meth:`create` when the job could not be enqueued (nothing was promised)."""
        self.client.delete(self._key(job_id))

    def _step_unless_canceled(self, job_id: str, to: JobStatus, change: _Change) -> Job:
        """Like :meth:`_step`, but a job marked for cancel ends ``canceled`` instead."""
        def step(job: Job) -> Optional[dict[str, Any]]:
            if job.cancel_requested and job.status is JobStatus.RUNNING:
                return {"status": JobStatus.CANCELED, "finished_at": utcnow()}
            return {"status": to, **(change(job) or {})}

        return self._apply(job_id, to, step)[0]

    def _step(self, job_id: str, to: JobStatus, change: _Change) -> Job:
        """Move the job to ``to`` writing ``change``'s fields, atomically.

        Raises :class:`KeyError` for an unknown job and :class:`InvalidTransition`
        when the state machine forbids the move.
        """
        return self._apply(job_id, to, change)[0]

    def _apply(self, job_id: str, to: Optional[JobStatus], change: _Change) -> tuple[Job, bool]:
        """Read, check, write only the changed fields: one Redis transaction, retried
        from the read when another client changed the record in between. Every status
        it writes is checked against :data:`TRANSITIONS`: ``to`` before ``change`` runs,
        and whatever status ``change`` itself writes (a cancel that wins over ``to``)."""
        key = self._key(job_id)
        began: list[bool] = []

        def transaction(pipe: redis.client.Pipeline) -> tuple[Job, bool]:
            began.clear()
            values = pipe.hgetall(key)
            if not values:
                raise KeyError(job_id)
            job = Job.from_redis(values)
            if to is not None:
                _check(job, to)
            fields = change(job)
            if fields is None:
                return job, False
            fields = {**({"status": to} if to is not None else {}), **fields, "updated_at": utcnow()}
            if "status" in fields:
                _check(job, JobStatus(fields["status"]))
            event = _webhook_event(job, fields.get("status"))
            if event is not None:
                fields["webhook"] = job.webhook.begin(event)
                began.append(True)
            updated = Job.model_validate({**job.model_dump(), **fields})
            pipe.multi()
            pipe.hset(key, mapping=updated.to_redis(set(fields)))
            pipe.expire(key, self.ttl)
            if began:
                pipe.zadd(self.outbox, {_outbox_entry(job_id, updated.webhook.delivery_id): time.time()})
            return updated, True

        updated, changed = self.client.transaction(transaction, key, value_from_callable=True)
        if began and self.on_event is not None:
            try:
                self.on_event(updated)
            except Exception:  # the step happened; a lost notice must not undo or fail it
                log.exception("job %s: could not send its %s webhook", job_id, updated.webhook.event.value)
        return updated, changed

    # ---- the content index ---------------------------------------------------------
    # (tenant, sha256 of an input) -> the job that parses it, so the same image
    # submitted twice by one tenant (a re-run backfill, a retrying client) is parsed
    # once, and no tenant learns what another one submitted.

    def _content_key(self, tenant: str, digest: str) -> str:
        return f"{self.content_prefix}{tenant}:{digest}"

    def job_for_content(self, tenant: str, digest: str) -> Optional[Job]:
        """The tenant's live job for this content, or None if there is none or it failed
        or was canceled (then the content may be submitted anew)."""
        job_id = self.client.get(self._content_key(tenant, digest))
        job = self.get(job_id.decode()) if job_id else None
        return job if job and job.status not in (JobStatus.FAILED, JobStatus.CANCELED) else None

    def claim_content(self, tenant: str, digest: str, job_id: str, replace: bool = False) -> bool:
        """Point the content at ``job_id``; without ``replace``, only if nobody has."""
        return bool(self.client.set(self._content_key(tenant, digest), job_id, ex=self.ttl, nx=not replace))

    def release_content(self, tenant: str, digest: str, job_id: str) -> None:
        key = self._content_key(tenant, digest)
        if self.client.get(key) == job_id.encode():
            self.client.delete(key)
