"""Accepting jobs: validate, deduplicate by content, store, record, enqueue.

The order matters: a worker may pick a job up the instant it is enqueued, so its input
and record exist before; if enqueueing fails, both are removed again and the client
gets a 503 (nothing half-accepted is left behind). The same content (sha256) already
queued, running or done is not parsed again: its existing job is returned.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlparse

from common.errors import ErrorCode, ObjectNotFound, ServiceError
from common.images import inspect_image
from common.jobs import Job, JobStatus, input_key, new_job_id
from api.deps import ApiDeps

log = logging.getLogger(__name__)
PRIORITIES = ("interactive", "backfill")


@dataclass(frozen=True)
class SourceRef:
    bucket: str
    key: str

    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class Accepted:
    job: Job
    created: bool  # False: this content already had a job, which is returned instead


def parse_source(value: Any, deps: ApiDeps) -> SourceRef:
    """``"s3://bucket/key"`` or ``{"bucket": ..., "key": ...}``, in a readable bucket."""
    if isinstance(value, str) and value.startswith("s3://"):
        parsed = urlparse(value)
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
    elif isinstance(value, dict) and isinstance(value.get("bucket"), str) and isinstance(value.get("key"), str):
        bucket, key = value["bucket"], value["key"]
    else:
        raise ServiceError('a source is "s3://bucket/key" or {"bucket": ..., "key": ...}', ErrorCode.INVALID_SOURCE)
    if not bucket or not key or len(key) > 1024:
        raise ServiceError("a source needs a bucket and a key", ErrorCode.INVALID_SOURCE)
    if bucket not in deps.settings.readable_buckets:
        raise ServiceError(f"bucket {bucket!r} is not one this service reads (SOURCE_BUCKETS)",
                           ErrorCode.SOURCE_FORBIDDEN)
    if bucket == deps.settings.s3_bucket and key.startswith("jobs/"):
        raise ServiceError("the service's own job files cannot be submitted", ErrorCode.SOURCE_FORBIDDEN)
    return SourceRef(bucket, key)


def parse_priority(value: Optional[str], default: str = "interactive") -> str:
    priority = value or default
    if priority not in PRIORITIES:
        raise ServiceError(f"priority must be one of {', '.join(PRIORITIES)}", ErrorCode.BAD_REQUEST)
    return priority


def check_capacity(deps: ApiDeps, priority: str) -> None:
    """Refuse backfill work while its queue is full; interactive work is never refused."""
    if priority != "backfill":
        return
    waiting = deps.jobs.client.llen(deps.settings.backfill_queue_name)
    if waiting >= deps.settings.backfill_max_queued:
        raise ServiceError(f"{waiting} backfill jobs are waiting; retry later", ErrorCode.QUEUE_FULL)


def submit_upload(deps: ApiDeps, data: bytes, priority: str = "interactive") -> Accepted:
    """Accept uploaded bytes as a job (or find the job that already has them)."""
    return _accept(deps, data, None, priority)


def submit_reference(deps: ApiDeps, source: SourceRef, priority: str = "interactive") -> Accepted:
    """Accept an object already in a readable bucket; the worker reads it from there."""
    try:
        data = deps.storage.get_from(source.bucket, source.key, max_bytes=deps.settings.max_upload_bytes)
    except ObjectNotFound:
        raise ServiceError(f"no object {source.uri()}", ErrorCode.SOURCE_NOT_FOUND) from None
    return _accept(deps, data, source, priority)


def _accept(deps: ApiDeps, data: bytes, source: Optional[SourceRef], priority: str) -> Accepted:
    info = inspect_image(data, deps.settings.image_limits)
    digest = hashlib.sha256(data).hexdigest()
    existing = deps.jobs.job_for_content(digest)
    if existing:
        return Accepted(_with_priority(deps, existing, priority), created=False)
    job_id = new_job_id()
    if not deps.jobs.claim_content(digest, job_id):
        existing = deps.jobs.job_for_content(digest)  # a concurrent submission of the same bytes won
        if existing:
            return Accepted(_with_priority(deps, existing, priority), created=False)
        deps.jobs.claim_content(digest, job_id, replace=True)  # the other one failed or expired
    input_info = {"width": info.width, "height": info.height, "format": info.format,
                  "bytes": len(data), "sha256": digest}
    job = Job.new(job_id, input_info, priority=priority,
                  source={"bucket": source.bucket, "key": source.key} if source else None)
    try:
        if source is None:
            deps.storage.put(input_key(job_id), data, content_type="application/octet-stream")
        deps.jobs.create(job)
        deps.enqueue(job_id, priority)
    except Exception:
        log.exception("could not accept job %s; rolling it back", job_id)
        _discard(deps, job_id, digest, uploaded=source is None)
        raise
    log.info("job %s queued (%s, %dx%d %s, %d bytes%s)", job_id, priority, info.width, info.height,
             info.format, len(data), f", {source.uri()}" if source else "")
    return Accepted(job, created=True)


def _with_priority(deps: ApiDeps, job: Job, priority: str) -> Job:
    """An interactive client must not wait behind the backfill backlog for content that
    a backfill already queued: the job gets a second message on the interactive queue
    (sent first, so a failure in between leaves at worst a spare message, which workers
    drop, never a promise without a message)."""
    if priority != "interactive" or job.priority == "interactive" or job.status is not JobStatus.QUEUED:
        return job
    deps.enqueue(job.id, "interactive")
    promoted = deps.jobs.promote(job.id)
    if promoted:
        log.info("job %s moved to the interactive queue", job.id)
    return promoted or deps.jobs.get(job.id) or job


def _discard(deps: ApiDeps, job_id: str, digest: str, uploaded: bool) -> None:
    steps = [lambda: deps.jobs.delete(job_id), lambda: deps.jobs.release_content(digest, job_id)]
    if uploaded:
        steps.append(lambda: deps.storage.delete(input_key(job_id)))
    for undo in steps:
        try:
            undo()
        except Exception:  # best effort: the record expires and the input is unreferenced
            log.warning("rollback step failed for job %s", job_id, exc_info=True)
