"""One job through the runner: real Redis, real local store, the tiny model in-process."""
import dataclasses
import hashlib
import io
import json

from typing import Optional

import jsonschema
import numpy as np
import pytest
from PIL import Image

from m2fp_contract.errors import ObjectNotFound, StorageUnavailable
from m2fp_contract.schema import ResultDocument
from common.jobs import InputInfo, JobError, JobResult, JobStatus, Priority, SourceRef, input_key, new_job_id, output_key
from common.job_store import JobStore
from common.labels import PALETTE
from common.services import Services
from common.storage import S3Store
from scripts.imagegen import encode, photo, photo_jpeg
from worker.engine import ParsingEngine
from worker.job_runner import run_job as run


@dataclasses.dataclass
class WorkerServices(Services):
    """A pool process's view: the services and its engine."""

    engine: Optional[ParsingEngine] = None


@pytest.fixture()
def ctx(settings, tiny_engine):
    return dataclasses.replace(WorkerServices.create(settings), engine=tiny_engine)


def run_job(ctx, job_id, **kwargs):
    return run(ctx, ctx.engine, job_id, **kwargs)


def input_info(data: bytes) -> InputInfo:
    return InputInfo(width=1, height=1, format="JPEG", bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def queue_job(ctx, data: bytes) -> str:
    job_id = new_job_id()
    ctx.storage.put(input_key(job_id), data, "application/octet-stream")
    ctx.jobs.create(job_id, input_info(data), Priority.INTERACTIVE)
    return job_id


def test_job_succeeds_with_outputs_at_input_size(ctx):
    job_id = queue_job(ctx, photo_jpeg(300, 200))
    job = run_job(ctx, job_id)
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 1
    colored = np.asarray(Image.open(io.BytesIO(ctx.storage.get(output_key(job_id, "colored.png")))))
    labels = np.asarray(Image.open(io.BytesIO(ctx.storage.get(output_key(job_id, "labels.png")))))
    assert colored.shape == (200, 300, 3) and labels.shape == (200, 300)
    # Each pixel has its own label's color (the palette itself is pinned in test_outputs):
    # any color of the palette would not do.
    assert (PALETTE[labels] == colored).all() and len(np.unique(labels)) >= 3
    summary = job.result.summary
    assert summary["persons"] >= 1 and len(summary["classes"]) >= 3
    assert job.result.outputs["labels.png"] == output_key(job_id, "labels.png")


GROUP_FIELDS = ("outputs_requested", "output_seconds", "keypoints", "tryon")


def closed(schema):
    """The JSON schema with every object closed (``additionalProperties: false``): a field
    the worker writes but the contract does not declare fails, where the contract's
    models ignore it when they read."""
    if isinstance(schema, dict):
        schema = {key: closed(value) for key, value in schema.items()}
        if schema.get("type") == "object" and "properties" in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [closed(value) for value in schema]
    return schema


def test_result_json_is_exactly_what_the_contract_declares(ctx):
    job_id = queue_job(ctx, photo_jpeg(120, 90))
    assert run_job(ctx, job_id).status is JobStatus.SUCCEEDED
    document = json.loads(ctx.storage.get(output_key(job_id, "result.json")))
    jsonschema.validate(document, closed(ResultDocument.model_json_schema()))
    # Every declared field is written, but those of the groups of outputs it did not ask for
    # (tests/test_extra_outputs.py checks a job that asks for every group).
    assert set(document) == set(ResultDocument.model_fields) - set(GROUP_FIELDS)
    assert document["people"] and document["classes"]  # the nested objects were checked too


def test_rerun_of_a_finished_job_does_nothing(ctx):
    job_id = queue_job(ctx, photo_jpeg(64, 64))
    first = run_job(ctx, job_id)
    ctx.storage.delete(output_key(job_id, "overlay.jpg"))
    assert run_job(ctx, job_id) == first  # a redelivered message after success
    with pytest.raises(ObjectNotFound):
        ctx.storage.get(output_key(job_id, "overlay.jpg"))


def test_an_input_deleted_before_the_job_ran_fails_it_as_the_services_loss(ctx):
    job_id = queue_job(ctx, photo_jpeg(64, 64))
    ctx.storage.delete(input_key(job_id))
    job = run_job(ctx, job_id)
    assert job.status is JobStatus.FAILED and job.error.code == "input_missing", job


def test_exif_rotated_input_gives_upright_outputs(ctx):
    job_id = queue_job(ctx, encode(photo(80, 40), "JPEG", exif_orientation=8))
    job = run_job(ctx, job_id)
    assert (job.result.summary["width"], job.result.summary["height"]) == (40, 80)


def test_undecodable_input_fails_with_a_code_and_no_retry(ctx):
    job_id = queue_job(ctx, b"GIF89a broken")
    job = run_job(ctx, job_id)
    assert job.status is JobStatus.FAILED and job.error.code == "invalid_image"


def test_job_found_running_is_counted_as_interrupted_and_rerun(ctx):
    job_id = queue_job(ctx, photo_jpeg(64, 64))
    ctx.jobs.start(job_id, worker="dead", message_id=None)  # its worker died mid-job
    job = run_job(ctx, job_id)
    assert job.status is JobStatus.SUCCEEDED and (job.attempts, job.lost) == (2, 1)


def test_a_job_that_kills_its_workers_fails_after_max_attempts(ctx):
    job_id = queue_job(ctx, photo_jpeg(64, 64))
    limit = ctx.settings.max_attempts
    for _ in range(limit):  # each start after the first finds it running: its worker died
        ctx.jobs.start(job_id, worker="dead", message_id=None)
    job = run_job(ctx, job_id)
    assert job.status is JobStatus.FAILED and job.error.code == "worker_lost"


def test_storage_outage_propagates_for_retry_and_leaves_the_job_open(ctx):
    job_id = queue_job(ctx, photo_jpeg(64, 64))
    ctx.storage = S3Store("http://127.0.0.1:9", "key", "secret-key", "bucket")  # nothing listens there
    with pytest.raises(StorageUnavailable):
        run_job(ctx, job_id)
    assert ctx.jobs.get(job_id).status is JobStatus.RUNNING  # the task's retry requeues it


def test_a_referenced_object_replaced_after_submission_fails_its_job(ctx, s3_store):
    ctx = dataclasses.replace(ctx, storage=s3_store)
    source = SourceRef(bucket=s3_store.bucket, key="archive/replaced.jpg")
    submitted = photo_jpeg(64, 48, seed=11)
    jobs = []
    for _ in range(2):
        job_id = new_job_id()
        ctx.jobs.create(job_id, input_info(submitted), Priority.BACKFILL, source)
        jobs.append(job_id)
    s3_store.put(source.key, submitted, "image/jpeg")
    assert run_job(ctx, jobs[0]).status is JobStatus.SUCCEEDED
    s3_store.put(source.key, photo_jpeg(64, 48, seed=12), "image/jpeg")
    job = run_job(ctx, jobs[1])
    assert job.status is JobStatus.FAILED and job.error.code == "source_changed", job


def test_a_second_message_for_a_running_job_is_dropped_not_counted_as_a_death(ctx):
    job_id = queue_job(ctx, photo_jpeg(64, 64))
    ctx.jobs.start(job_id, worker="w", message_id="first")
    job = run_job(ctx, job_id, message_id="second")  # e.g. the job was moved to the interactive queue
    assert (job.status, job.attempts, job.lost, job.message_id) == (JobStatus.RUNNING, 1, 0, "first")
    redelivered = run_job(ctx, job_id, message_id="first")  # its own message again: its worker died
    assert redelivered.status is JobStatus.SUCCEEDED and redelivered.lost == 1 and redelivered.attempts == 2


def test_a_job_canceled_while_running_stops_before_inference_and_publishes_nothing(ctx):
    job_id = queue_job(ctx, photo_jpeg(64, 64))
    ctx.jobs.start(job_id, worker="w", message_id="first")
    ctx.jobs.request_cancel(job_id)  # a cancel while its (dead) worker had it; the message comes back
    job = run_job(ctx, job_id, message_id="first")
    assert job.status is JobStatus.CANCELED and job.result is None
    with pytest.raises(ObjectNotFound):
        ctx.storage.get(output_key(job_id, "labels.png"))


class CancelOnStart(JobStore):
    """Fault injection: a client's cancel lands between the worker's read of the job and
    its start, on the first start only."""

    def start(self, job_id, worker, message_id, process=None):
        if not getattr(self, "canceled", False):
            self.canceled = True
            self.request_cancel(job_id)
        return super().start(job_id, worker, message_id)


class AnotherMessageStartsFirst(JobStore):
    """Fault injection: another worker's message starts the job between this worker's
    read of the record and its own start."""

    def start(self, job_id, worker, message_id, process=None):
        if not getattr(self, "raced", False):
            self.raced = True
            super().start(job_id, "other-worker", "other-message")
        return super().start(job_id, worker, message_id, process)


def test_a_message_that_loses_the_start_to_another_is_dropped_and_the_job_runs_once(ctx):
    job_id = queue_job(ctx, photo_jpeg(64, 64))
    racing = dataclasses.replace(ctx, jobs=AnotherMessageStartsFirst(ctx.jobs.client, ctx.jobs.ttl))
    job = run_job(racing, job_id, worker="w", message_id="mine")
    assert (job.status, job.attempts, job.lost, job.worker, job.message_id) == (
        JobStatus.RUNNING, 1, 0, "other-worker", "other-message")  # not run here, not a death, not failed


def waiting_entries(ctx, job_id) -> dict:
    """The job's place in any waiting order (empty: none), and the depth of each queue."""
    return {"places": ctx.queue.places([(job_id, p) for p in Priority]),
            "depth": {p: ctx.queue.depth(p) for p in Priority}}


NOTHING_WAITS = {"places": {}, "depth": {Priority.INTERACTIVE: 0, Priority.BACKFILL: 0}}


def test_a_cancel_that_lands_just_before_the_start_drops_the_message_quietly(ctx, caplog):
    job_id = queue_job(ctx, photo_jpeg(64, 64))
    ctx.queue.enqueue(job_id, Priority.INTERACTIVE)
    racing = dataclasses.replace(ctx, jobs=CancelOnStart(ctx.jobs.client, ctx.jobs.ttl, on_event=ctx.jobs.on_event))
    with caplog.at_level("INFO", logger="worker.job_runner"):
        job = run_job(racing, job_id, message_id="m1")
    assert job.status is JobStatus.CANCELED and job.attempts == 0 and job.error is None
    assert any("was canceled before it could start" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR") or r.exc_info]
    assert waiting_entries(ctx, job_id) == NOTHING_WAITS
    with pytest.raises(ObjectNotFound):
        ctx.storage.get(output_key(job_id, "labels.png"))


def test_a_message_dropped_for_an_ended_expired_or_running_job_leaves_no_waiting_entry(ctx):
    """Entries that outlived their reason (a spare message after a move to the interactive
    queue, a record that expired) go when the message is dropped, so they never count as
    waiting jobs."""
    canceled = queue_job(ctx, photo_jpeg(64, 64, seed=1))
    ctx.queue.enqueue(canceled, Priority.BACKFILL)
    ctx.jobs.request_cancel(canceled)
    assert run_job(ctx, canceled, message_id="m1").status is JobStatus.CANCELED
    assert waiting_entries(ctx, canceled) == NOTHING_WAITS

    running = queue_job(ctx, photo_jpeg(64, 64, seed=2))
    ctx.jobs.start(running, worker="w", message_id="first")
    ctx.queue.enqueue(running, Priority.INTERACTIVE)  # a promotion that came just after the start
    assert run_job(ctx, running, message_id="spare").status is JobStatus.RUNNING
    assert waiting_entries(ctx, running) == NOTHING_WAITS

    done = queue_job(ctx, photo_jpeg(64, 64, seed=3))
    assert run_job(ctx, done, message_id="first").status is JobStatus.SUCCEEDED
    ctx.queue.enqueue(done, Priority.INTERACTIVE)
    assert run_job(ctx, done, message_id="spare").status is JobStatus.SUCCEEDED
    assert waiting_entries(ctx, done) == NOTHING_WAITS

    expired = queue_job(ctx, photo_jpeg(64, 64, seed=4))
    ctx.queue.enqueue(expired, Priority.BACKFILL)
    ctx.jobs.client.delete(ctx.jobs.prefix + expired)  # its record expired
    assert run_job(ctx, expired, message_id="m1") is None
    assert waiting_entries(ctx, expired) == NOTHING_WAITS



class FinishedElsewhere:
    """An engine during whose parse the sweeper gives the job to another worker, which ends
    it first: what a worker cut off from Redis past STRANDED_AFTER_SECONDS finds when its
    network comes back."""

    def __init__(self, ctx, job_id: str) -> None:
        self.ctx, self.job_id = ctx, job_id
        self.description = ctx.engine.description

    def parse(self, image):
        jobs = self.ctx.jobs
        lost = JobError(code="worker_lost", message="its process went silent")
        jobs.recover(self.job_id, jobs.get(self.job_id), lost, lost, max_lost=3)
        jobs.start(self.job_id, worker="other@host", message_id="second-message")
        jobs.succeed(self.job_id, JobResult(outputs={}, summary={"by": "other"}))
        return self.ctx.engine.parse(image)


def test_a_result_that_arrives_after_another_run_ended_the_job_leaves_that_ending(ctx, caplog):
    job_id = queue_job(ctx, photo_jpeg(64, 48))
    late = dataclasses.replace(ctx, engine=FinishedElsewhere(ctx, job_id))
    with caplog.at_level("INFO", logger="worker.job_runner"):
        job = run_job(late, job_id, worker="late@host", message_id="first-message")
    assert (job.status, job.worker, job.result.summary) == (JobStatus.SUCCEEDED, "other@host", {"by": "other"})
    assert ctx.jobs.get(job_id) == job
    assert any(f"job {job_id} ended succeeded in another run" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR") or r.exc_info]
