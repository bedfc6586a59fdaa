"""One job, start to finish: start → read input → parse → render → store → succeed.

A cancel requested while the job runs stops it at a safe point: before inference, or
before the outputs are stored (and a cancel that lands while they are stored still
wins: ``succeed`` then ends the job ``canceled``, its files unreferenced).

Kept free of Celery so it can be read (and tested) as plain code; the Celery task in
:mod:`worker.tasks` only maps its outcomes onto retries. Every change of the job's
record is one lifecycle step of :class:`common.job_store.JobStore`.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Optional

import numpy as np

from m2fp_contract.errors import ErrorCode, InputRejected, ObjectNotFound
from common.images import decode_rgb
from common.jobs import (InvalidTransition, Job, JobError, JobResult, JobStatus, RunsUnderAnotherMessage,
                         input_key, output_key)
from m2fp_contract.schema import output_media_type
from common.services import Services
from worker import metrics
from worker.engine import ParsingEngine
from worker.outputs import RenderedOutputs, render
from worker.pose import PoseEngine

log = logging.getLogger(__name__)


def fail(services: Services, job_id: str, code: ErrorCode, message: str) -> Job:
    log.warning("job %s failed: %s: %s", job_id, code.value, message)
    job = services.jobs.fail(job_id, JobError.of(code, message))
    metrics.count_job("failed", code)
    return job


def read_input(services: Services, job: Job) -> bytes:
    """The job's image: its uploaded copy, or the object it references.

    A referenced object may have been replaced since the API validated and hashed it;
    parsing the new bytes would file them under the old content hash, so that fails
    the job (source_changed) instead.
    """
    if not job.source:
        return services.storage.get(input_key(job.id))
    data = services.storage.get_from(job.source.bucket, job.source.key, max_bytes=services.settings.max_upload_bytes)
    if hashlib.sha256(data).hexdigest() != job.input.sha256:
        raise InputRejected(f"{job.source.uri()} changed after it was submitted; submit it again",
                            ErrorCode.SOURCE_CHANGED)
    return data


def _decoded_input(services: Services, job: Job) -> np.ndarray:
    """The input as RGB pixels; :class:`InputRejected` with the code the job fails with."""
    try:
        return decode_rgb(read_input(services, job), services.settings.image_limits)
    except ObjectNotFound:
        if job.source:
            raise InputRejected("the referenced object is gone", ErrorCode.SOURCE_NOT_FOUND) from None
        raise InputRejected("the job's uploaded input is gone from storage (deleted, or expired by a lifecycle "
                            "rule before the job ran); submit the image again", ErrorCode.INPUT_MISSING) from None


def _stop(services: Services, job_id: str) -> Job:
    """End a job whose cancel was requested while it ran; nothing of it is published."""
    log.info("job %s canceled at a safe point", job_id)
    job = services.jobs.stop(job_id)
    metrics.count_job(job.status.value)
    return job


def _store(services: Services, job_id: str, rendered: RenderedOutputs) -> dict[str, str]:
    """Write every output under its fixed key (a rerun overwrites); name -> key."""
    keys = {}
    for name, data in rendered.files.items():
        keys[name] = output_key(job_id, name)
        services.storage.put(keys[name], data, content_type=output_media_type(name))
    return keys


def run_job(services: Services, engine: ParsingEngine, job_id: str, worker: Optional[str] = None,
            message_id: Optional[str] = None, process: Optional[str] = None,
            pose: Optional[PoseEngine] = None) -> Optional[Job]:
    """Run ``job_id`` and return its final record (None if the record expired); ``pose``
    finds the body keypoints of jobs that ask for them.

    Safe to run again for the same job: a terminal job is left alone, and outputs
    are written under fixed keys, so a rerun overwrites instead of duplicating.
    Transient storage and Redis errors propagate to the caller for a retry.
    """
    job = services.jobs.get(job_id)
    # Every message that is dropped also drops the job's place in the waiting order: a
    # message can outlive its entry's reason (a cancel, a spare message after a move to
    # the interactive queue), and a stale entry would count as a waiting job.
    if job is None:
        log.warning("job %s has no record (expired or never created); dropping it", job_id)
        services.queue.taken(job_id)
        return None
    if job.status.terminal:
        log.info("job %s is already %s; nothing to do", job_id, job.status.value)
        services.queue.taken(job_id)
        return job
    if job.status is JobStatus.RUNNING and message_id and job.message_id not in (None, message_id):
        # A second message for the job (it was moved to the interactive queue): the
        # message that started it owns it, and comes back itself if its worker died.
        log.info("job %s is running under message %s; dropping duplicate %s", job_id, job.message_id, message_id)
        services.queue.taken(job_id)
        return job
    lost = job.lost + (job.status is JobStatus.RUNNING)  # still running: its worker died
    try:
        if lost >= services.settings.max_attempts:
            return fail(services, job_id, ErrorCode.WORKER_LOST,
                        f"the worker running this job died {lost} times (out of memory, or killed); "
                        "it will not be tried again")
        job = services.jobs.start(job_id, worker=worker, message_id=message_id, process=process)
    except RunsUnderAnotherMessage:
        log.info("job %s was started under another message just now; dropping duplicate %s", job_id, message_id)
        services.queue.taken(job_id)
        return services.jobs.get(job_id)
    except (InvalidTransition, KeyError):
        # The job changed since it was read: a client canceled it (or it ended, or expired)
        # just before this worker could start it. Its message is simply dropped.
        ended = services.jobs.get(job_id)
        if ended is not None and not ended.status.terminal:
            raise
        log.info("job %s was %s before it could start; dropping its message", job_id,
                 ended.status.value if ended else "gone")
        services.queue.taken(job_id)
        return ended
    services.queue.taken(job_id)
    metrics.job_started(job)
    began = time.monotonic()
    try:
        image = _decoded_input(services, job)
    except InputRejected as exc:
        return fail(services, job_id, exc.code, exc.message)
    if services.jobs.cancel_pending(job_id):  # safe point: before inference
        return _stop(services, job_id)
    started = time.perf_counter()
    parsing = engine.parse(image)
    inference_seconds = time.perf_counter() - started
    metrics.INFERENCE_SECONDS.observe(inference_seconds)
    try:
        with metrics.RENDER_SECONDS.time():
            rendered = render(image, parsing, {
                "job_id": job_id,
                "model": engine.description,
                "inference_size": list(parsing.size),
                "inference_seconds": round(inference_seconds, 3),
            }, job.output, pose)
    except InputRejected as exc:  # an output the photo cannot give (try-on of a person it does not have)
        return fail(services, job_id, exc.code, exc.message)
    if services.jobs.cancel_pending(job_id):  # safe point: before the outputs are stored
        return _stop(services, job_id)
    with metrics.STORE_SECONDS.time():
        keys = _store(services, job_id, rendered)
    log.info("job %s succeeded in %.2f s of inference (%d classes, %s persons)", job_id,
             inference_seconds, len(rendered.summary["classes"]), rendered.summary["persons"])
    summary = {k: v for k, v in rendered.summary.items() if k != "legend"}
    try:
        job = services.jobs.succeed(job_id, JobResult(outputs=keys, summary=summary))
    except InvalidTransition:
        # This process was presumed lost (cut off from Redis past STRANDED_AFTER_SECONDS)
        # and the job ran again elsewhere and ended first: that ending stands. The outputs
        # just written are the same job's, under the same keys.
        ended = services.jobs.get(job_id)
        if ended is None or not ended.status.terminal:
            raise
        log.info("job %s ended %s in another run while this one went on (this worker was presumed lost); "
                 "that result stands", job_id, ended.status.value)
        return ended
    services.queue.service_times.record(time.monotonic() - began)  # for queued jobs' ETAs
    metrics.count_job(job.status.value)
    return job
