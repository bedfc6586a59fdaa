"""The job record: what a client polls, owned by the service and kept in Redis.

Celery's result backend cannot tell "unknown" from "waiting" (both read PENDING),
so the service keeps its own record per job, with an explicit state machine:

    queued ──> running ──> succeeded
       │          │  ^
       │          │  └── running again: redelivered after its worker died
       │          └────> queued (waiting to retry after a transient error)
       └──────────┴────> failed

``succeeded`` and ``failed`` are terminal. Records expire ``job_ttl_seconds`` after
their last change.
"""
from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Callable, Optional

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

OUTPUTS: dict[str, str] = {
    "colored.png": "image/png",
    "labels.png": "image/png",
    "overlay.jpg": "image/jpeg",
    "result.json": "application/json",
}
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


TERMINAL_STATUSES = frozenset(status.value for status in JobStatus if status.terminal)
# Items per batch submission, and job ids per poll: part of the API's contract.
MAX_BATCH = 100

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
}


class InvalidTransition(Exception):
    """A state change the machine above does not allow (e.g. leaving a terminal state)."""


def new_job_id() -> str:
    """128 random bits, URL-safe: unguessable, so knowing one id reveals no other."""
    return secrets.token_urlsafe(16)


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.match(value))


def input_key(job_id: str) -> str:
    return f"jobs/{job_id}/input"


def output_key(job_id: str, name: str) -> str:
    if name not in OUTPUTS:
        raise ValueError(f"unknown output {name!r}")
    return f"jobs/{job_id}/{name}"


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    id: str
    status: JobStatus
    created_at: str
    updated_at: str
    input: dict[str, Any] = field(default_factory=dict)
    source: Optional[dict[str, str]] = None  # {"bucket", "key"} when submitted by reference
    priority: str = "interactive"
    worker: Optional[str] = None  # Celery node that last started it
    message_id: Optional[str] = None  # the queue message (Celery task id) that last started it
    attempts: int = 0  # times a worker started it
    lost: int = 0  # times its worker died mid-job (found still running at a restart)
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    result: Optional[dict[str, Any]] = None
    error: Optional[dict[str, str]] = None  # why it failed (terminal)
    last_error: Optional[dict[str, str]] = None  # a transient error it is waiting out

    @classmethod
    def new(cls, job_id: str, input_info: dict[str, Any], **fields: Any) -> "Job":
        now = utcnow()
        return cls(id=job_id, status=JobStatus.QUEUED, created_at=now, updated_at=now, input=input_info, **fields)

    def to_redis(self) -> dict[str, str]:
        values = asdict(self)
        values["status"] = self.status.value
        return {k: json.dumps(v) for k, v in values.items()}

    @classmethod
    def from_redis(cls, values: dict[bytes, bytes]) -> "Job":
        decoded = {k.decode(): json.loads(v) for k, v in values.items()}
        decoded["status"] = JobStatus(decoded["status"])
        return cls(**decoded)


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


class JobStore:
    """Job records in Redis, one hash per job, changed only through :meth:`transition`."""

    def __init__(self, client: redis.Redis, ttl_seconds: int, prefix: str = "m2fp:job:") -> None:
        self.client = client
        self.ttl = ttl_seconds
        self.prefix = prefix
        self.content_prefix = prefix.replace(":job:", ":content:")

    def _key(self, job_id: str) -> str:
        return self.prefix + job_id

    def create(self, job: Job) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(job.id), mapping=job.to_redis())
            pipe.expire(self._key(job.id), self.ttl)
            pipe.execute()

    def get(self, job_id: str) -> Optional[Job]:
        values = self.client.hgetall(self._key(job_id))
        return Job.from_redis(values) if values else None

    def delete(self, job_id: str) -> None:
        self.client.delete(self._key(job_id))

    def get_many(self, job_ids: list[str]) -> list[Optional[Job]]:
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self._key(job_id))
            return [Job.from_redis(values) if values else None for values in pipe.execute()]

    # The content index: sha256 of an input -> the job that parses it, so the same
    # image submitted twice (a re-run backfill, a retrying client) is parsed once.

    def job_for_content(self, digest: str) -> Optional[Job]:
        """The live job for this content, or None if there is none or it failed."""
        job_id = self.client.get(self.content_prefix + digest)
        job = self.get(job_id.decode()) if job_id else None
        return job if job and job.status is not JobStatus.FAILED else None

    def claim_content(self, digest: str, job_id: str, replace: bool = False) -> bool:
        """Point the content at ``job_id``; without ``replace``, only if nobody has."""
        return bool(self.client.set(self.content_prefix + digest, job_id, ex=self.ttl, nx=not replace))

    def release_content(self, digest: str, job_id: str) -> None:
        key = self.content_prefix + digest
        if self.client.get(key) == job_id.encode():
            self.client.delete(key)

    def transition(self, job_id: str, to: JobStatus, **changes: Any) -> Job:
        """Move the job to ``to`` and apply ``changes``, atomically (WATCH/MULTI).

        Raises :class:`KeyError` for an unknown job and :class:`InvalidTransition`
        when the state machine forbids the move.
        """
        def move(job: Job) -> bool:
            if to not in TRANSITIONS[job.status]:
                raise InvalidTransition(f"job {job_id}: {job.status.value} -> {to.value}")
            job.status = to
            for name, value in changes.items():
                setattr(job, name, value)
            return True

        return self._modify(job_id, move)

    def promote(self, job_id: str) -> Optional[Job]:
        """Give a waiting job interactive priority; None unless it was still waiting at a
        lower one (a worker took it meanwhile, or it already had it)."""
        raised = []

        def raise_priority(job: Job) -> bool:
            raised.clear()  # a retried attempt (WatchError) decides afresh
            if job.status is not JobStatus.QUEUED or job.priority == "interactive":
                return False
            job.priority = "interactive"
            raised.append(True)
            return True

        try:
            job = self._modify(job_id, raise_priority)
        except KeyError:
            return None
        return job if raised else None

    def _modify(self, job_id: str, change: Callable[[Job], bool]) -> Job:
        """Apply ``change`` to the record atomically (WATCH/MULTI, retried on a race);
        ``change`` returns False to leave the record as it was."""
        key = self._key(job_id)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    values = pipe.hgetall(key)
                    if not values:
                        raise KeyError(job_id)
                    job = Job.from_redis(values)
                    if not change(job):
                        pipe.reset()
                        return job
                    job.updated_at = utcnow()
                    pipe.multi()
                    pipe.hset(key, mapping=job.to_redis())
                    pipe.expire(key, self.ttl)
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue
