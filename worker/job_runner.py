"""One job, start to finish: input from storage → M2FP → outputs to storage → record.

Kept free of Celery so it can be read (and tested) as plain code; the Celery task in
:mod:`worker.tasks` only maps its outcomes onto retries.
"""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Optional

from common.errors import ErrorCode, InputRejected, ObjectNotFound
from common.images import decode_rgb
from common.jobs import OUTPUTS, Job, JobStatus, JobStore, input_key, output_key, utcnow
from worker.context import WorkerContext
from worker.outputs import render

log = logging.getLogger(__name__)


def fail(jobs: JobStore, job_id: str, code: ErrorCode, message: str) -> Job:
    log.warning("job %s failed: %s: %s", job_id, code.value, message)
    return jobs.transition(job_id, JobStatus.FAILED, finished_at=utcnow(),
                           error={"code": code.value, "message": message})


def _hold(hold_file: Optional[Path], job_id: str) -> None:
    """Test fault injection: wait here while the hold file exists (see Settings.hold_file)."""
    if hold_file is None or not hold_file.exists():
        return
    deaf = hold_file.read_text().strip() == "deaf"
    # Ignored, not blocked: the engine's runtime has threads of its own that would take a
    # signal this thread blocks, and Python runs the handler anyway (Celery's soft limit).
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN) if deaf else None
    (hold_file.parent / f"holding-{job_id}").write_text(str(os.getpid()))
    try:
        while hold_file.exists():
            time.sleep(0.05)
    finally:
        if deaf:
            signal.signal(signal.SIGUSR1, previous)


def read_input(ctx: WorkerContext, job: Job) -> bytes:
    """The job's image: its uploaded copy, or the object it references.

    A referenced object may have been replaced since the API validated and hashed it;
    parsing the new bytes would file them under the old content hash, so that fails
    the job (source_changed) instead.
    """
    if not job.source:
        return ctx.storage.get(input_key(job.id))
    data = ctx.storage.get_from(job.source["bucket"], job.source["key"], max_bytes=ctx.settings.max_upload_bytes)
    if hashlib.sha256(data).hexdigest() != job.input.get("sha256"):
        raise InputRejected(f"s3://{job.source['bucket']}/{job.source['key']} changed after it was submitted; "
                           "submit it again", ErrorCode.SOURCE_CHANGED)
    return data


def run_job(ctx: WorkerContext, job_id: str, worker: Optional[str] = None,
            message_id: Optional[str] = None) -> Optional[Job]:
    """Run ``job_id`` and return its final record (None if the record expired).

    Safe to run again for the same job: a terminal job is left alone, and outputs
    are written under fixed keys, so a rerun overwrites instead of duplicating.
    Transient storage and Redis errors propagate to the caller for a retry.
    """
    job = ctx.jobs.get(job_id)
    if job is None:
        log.warning("job %s has no record (expired or never created); dropping it", job_id)
        return None
    if job.status.terminal:
        log.info("job %s is already %s; nothing to do", job_id, job.status.value)
        return job
    if job.status is JobStatus.RUNNING and message_id and job.message_id not in (None, message_id):
        # A second message for the job (it was moved to the interactive queue): the
        # message that started it owns it, and comes back itself if its worker died.
        log.info("job %s is running under message %s; dropping duplicate %s", job_id, job.message_id, message_id)
        return job
    lost = job.lost + (job.status is JobStatus.RUNNING)  # still running: its worker died
    if lost >= ctx.settings.max_attempts:
        return fail(ctx.jobs, job_id, ErrorCode.WORKER_LOST,
                    f"the worker running this job died {lost} times (out of memory, or killed); "
                    "it will not be tried again")
    job = ctx.jobs.transition(job_id, JobStatus.RUNNING, started_at=utcnow(), attempts=job.attempts + 1,
                              lost=lost, last_error=None, worker=worker, message_id=message_id)
    _hold(ctx.settings.hold_file, job_id)

    try:
        image = decode_rgb(read_input(ctx, job), ctx.settings.image_limits)
    except InputRejected as exc:
        return fail(ctx.jobs, job_id, exc.code, exc.message)
    except ObjectNotFound:
        if job.source:
            return fail(ctx.jobs, job_id, ErrorCode.SOURCE_NOT_FOUND, "the referenced object is gone")
        return fail(ctx.jobs, job_id, ErrorCode.INPUT_MISSING, "the job's uploaded input is gone from storage "
                    "(deleted, or expired by a lifecycle rule before the job ran); submit the image again")

    started = time.perf_counter()
    parsing = ctx.engine.parse(image)
    inference_seconds = time.perf_counter() - started

    rendered = render(image, parsing, {
        "job_id": job_id,
        "model": ctx.engine.description,
        "inference_size": list(parsing.size),
        "inference_seconds": round(inference_seconds, 3),
    })
    keys = {}
    for name, data in rendered.files.items():
        key = output_key(job_id, name)
        ctx.storage.put(key, data, content_type=OUTPUTS[name])
        keys[name] = key
    log.info("job %s succeeded in %.2f s of inference (%d classes, %s persons)", job_id,
             inference_seconds, len(rendered.summary["classes"]), rendered.summary["persons"])
    summary = {k: v for k, v in rendered.summary.items() if k != "legend"}
    return ctx.jobs.transition(job_id, JobStatus.SUCCEEDED, finished_at=utcnow(),
                               result={"outputs": keys, "summary": summary})

