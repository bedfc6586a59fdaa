"""Accepting jobs: validate, deduplicate by content, store, record, enqueue.

One path for every way in: a single upload, a single reference, and each item of a
batch are all a :data:`Submission` handed to :func:`accept`. The order matters: a
worker may pick a job up the instant it is enqueued, so its input and record exist
before. The same content (sha256) already queued, running or done is not parsed
again: its existing job is returned, whatever the interleaving of submissions.
"""
from __future__ import annotations

import hashlib
import logging
import posixpath
from dataclasses import dataclass
from typing import IO, Optional, Union

from m2fp_contract.errors import ErrorCode, ObjectNotFound, ServiceError
from common.images import inspect_image
from common.jobs import InputInfo, Job, JobStatus, OutputOptions, Priority, SourceRef, Webhook, input_key, new_job_id
from common.redis_connection import confirm_replicated
from common.services import Services
from api.auth import Principal
from api.metrics import UNREPLICATED_ACCEPTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """An uploaded file, read (up to the size limit) only when its turn comes."""

    stream: IO[bytes]
    filename: Optional[str] = None


Submission = Union[Upload, SourceRef]


@dataclass
class Accepted:
    job: Job
    created: bool  # False: this content already had a job, which is returned instead


def check_capacity(services: Services, priority: Priority) -> None:
    """Refuse backfill work while its queue is full; interactive work is never refused."""
    if priority is not Priority.BACKFILL:
        return
    waiting = services.queue.depth(priority)
    if waiting >= services.settings.backfill_max_queued:
        raise ServiceError(f"{waiting} backfill jobs are waiting; retry later", ErrorCode.QUEUE_FULL)


def accept(services: Services, submission: Submission, priority: Priority, caller: Principal,
           webhook: Optional[Webhook] = None, output: OutputOptions = OutputOptions()) -> Accepted:
    """Accept one upload or reference as ``caller``'s job (or find the caller's job that
    already has this content with these ``output`` options), told of its changes at
    ``webhook`` if one is given."""
    if isinstance(submission, SourceRef):
        _check_readable(services, submission, caller)
        try:
            data = services.storage.get_from(submission.bucket, submission.key,
                                              max_bytes=services.settings.max_upload_bytes)
        except ObjectNotFound:
            raise ServiceError(f"no object {submission.uri()}", ErrorCode.SOURCE_NOT_FOUND) from None
        return _accept(services, data, submission, priority, caller.tenant, webhook, output)
    return _accept(services, _read(services, submission), None, priority, caller.tenant, webhook, output)


def _read(services: Services, upload: Upload) -> bytes:
    limit = services.settings.max_upload_bytes
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(f"the image is larger than {limit} bytes", ErrorCode.PAYLOAD_TOO_LARGE)
    return data


def _check_readable(services: Services, source: SourceRef, caller: Principal) -> None:
    """Only buckets the operator opened (SOURCE_BUCKETS), never the service's own job
    files, and within the prefixes the caller's key allows, when it names any."""
    if source.bucket not in services.settings.readable_buckets:
        raise ServiceError(f"bucket {source.bucket!r} is not one this service reads (SOURCE_BUCKETS)",
                           ErrorCode.SOURCE_FORBIDDEN)
    if source.bucket == services.settings.s3_bucket and _names_job_files(source.key):
        raise ServiceError("the service's own job files cannot be submitted", ErrorCode.SOURCE_FORBIDDEN)
    if not caller.may_read(source.uri()):
        raise ServiceError(f"this API key may not submit {source.uri()}", ErrorCode.SOURCE_FORBIDDEN)


def _names_job_files(key: str) -> bool:
    """Whether ``key`` reaches the service's own ``jobs/`` objects once an object store
    cleans it up as S3 servers do (a leading slash, ``//``, ``.`` and ``..`` segments)."""
    cleaned = posixpath.normpath("/" + key).lstrip("/")
    return cleaned == "jobs" or cleaned.startswith("jobs/")


def _accept(services: Services, data: bytes, source: Optional[SourceRef], priority: Priority,
            tenant: str, webhook: Optional[Webhook], output: OutputOptions) -> Accepted:
    """Store the input, then create the job and its content claim in one step (or find
    the job that already has this content), then send its message.

    Nothing another submission may have been answered with is ever undone: once the
    record exists, a failed send leaves it ``queued`` and the sweeper
    (``worker/sweeper.py``) sends its message when Redis answers again, so the caller is
    told the job was accepted. Only this submission's own input object is removed when
    no record came of it.
    """
    info = inspect_image(data, services.settings.image_limits)
    _check_keypoints(output, info.width, info.height)
    digest = hashlib.sha256(data).hexdigest()
    content = output.content_key(digest)
    existing = services.jobs.job_for_content(tenant, content)  # known content: no upload at all
    if existing:
        return Accepted(_existing(services, existing, priority, webhook), created=False)
    job_id = new_job_id()
    input_info = InputInfo(width=info.width, height=info.height, format=info.format, bytes=len(data), sha256=digest)
    try:
        if source is None:
            services.storage.put(input_key(job_id), data, content_type="application/octet-stream")
        job, created = services.jobs.create_for_content(job_id, content, input_info, priority, source, tenant,
                                                        webhook, output)
    except Exception:
        log.exception("could not accept a job of tenant %s; removing its input", tenant)
        _drop_input(services, job_id, source)
        raise
    if not created:  # a concurrent submission of the same bytes made the job first
        _drop_input(services, job_id, source)
        return Accepted(_existing(services, job, priority, webhook), created=False)
    try:
        services.queue.enqueue(job_id, priority)
    except Exception:
        log.warning("job %s: its message could not be sent; the sweeper sends it once Redis answers", job_id,
                    exc_info=True)
    _confirm_replicated(services, job_id)
    log.info("job %s queued (tenant %s, %s, %dx%d %s, %d bytes%s)", job_id, tenant, priority.value, info.width,
             info.height, info.format, len(data), f", {source.uri()}" if source else "")
    return Accepted(job, created=True)


def _check_keypoints(output: OutputOptions, width: int, height: int) -> None:
    """Submitted keypoints must lie on the photo (the schema checked their shape): points
    elsewhere were measured on another image, or at another size, and would draw the
    try-on masks in the wrong place without a word."""
    for index, person in enumerate(output.keypoints or []):
        xs, ys = person[0::3], person[1::3]
        if max(xs) > width or max(ys) > height:
            raise ServiceError(f"keypoints: people[{index}] has points outside the {width}x{height} photo; send "
                               "them in the photo's own pixels", ErrorCode.INVALID_KEYPOINTS)


def _confirm_replicated(services: Services, job_id: str) -> None:
    """Behind Sentinel, answer 202 only once a replica holds the job: replication is
    asynchronous, and a master that dies before its replica has the record would take an
    accepted job with it. A Redis error here is the caller's 503 (a retry of the same
    bytes finds this job, if it survived); too few replicas in time still accept the job,
    logged and counted, since refusing every job while a replica is down would turn
    a lost replica into an outage."""
    wanted = services.settings.redis_wait_replicas
    if not wanted:
        return
    confirmed = confirm_replicated(services.redis, wanted, services.settings.redis_wait_ms)
    if confirmed < wanted:
        UNREPLICATED_ACCEPTS.inc()
        log.warning("job %s accepted with %d of %d Redis replicas confirming within %d ms: a failover now could "
                    "lose it; check the replicas (INFO replication on the master)", job_id, confirmed, wanted,
                    services.settings.redis_wait_ms)


def _drop_input(services: Services, job_id: str, source: Optional[SourceRef]) -> None:
    """Remove the input this submission stored under its own new id (a put that failed
    half-way too); a reference has none. Best effort: an unreferenced object harms no one."""
    if source is not None:
        return
    try:
        services.storage.delete(input_key(job_id))
    except Exception:
        log.warning("could not remove the unused input of %s", job_id, exc_info=True)


def _existing(services: Services, job: Job, priority: Priority, webhook: Optional[Webhook]) -> Job:
    """The job that already has this content, with this submission's priority and, if it
    has no webhook yet and has not ended, its webhook."""
    if webhook is not None and job.webhook is None and not job.status.terminal:
        try:
            job = services.jobs.subscribe(job.id, webhook)
        except KeyError:  # expired in between: the answer is the job as it was
            pass
    return _with_priority(services, job, priority)


def _with_priority(services: Services, job: Job, priority: Priority) -> Job:
    """An interactive client must not wait behind the backfill backlog for content that
    a backfill already queued: the job gets a second message on the interactive queue
    (sent first, so a failure in between leaves at worst a spare message, which workers
    drop, never a promise without a message)."""
    if priority is not Priority.INTERACTIVE or job.priority is Priority.INTERACTIVE \
            or job.status is not JobStatus.QUEUED:
        return job
    services.queue.enqueue(job.id, Priority.INTERACTIVE)
    promoted = services.jobs.promote(job.id)
    if promoted:
        log.info("job %s moved to the interactive queue", job.id)
        return promoted
    current = services.jobs.get(job.id)
    if current is None or current.status is not JobStatus.QUEUED:
        services.queue.taken(job.id)  # a worker took it meanwhile: the entry just made waits for nothing
    return current or job
