"""The job record and its lifecycle steps, on a real Redis."""
import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pydantic
import pytest

from common.jobs import (TRANSITIONS, InputInfo, InvalidTransition, Job, JobError, JobResult, JobStatus, Priority,
                         RunsUnderAnotherMessage, SourceRef, Webhook, is_job_id, new_job_id)
from m2fp_contract.schema import WebhookEvent

INPUT = InputInfo(width=3, height=2, format="JPEG", bytes=10, sha256="0" * 64)


def test_job_ids_carry_128_random_bits_and_only_their_shape_passes_the_check():
    job_id = new_job_id()
    assert len(base64.urlsafe_b64decode(job_id + "==")) == 16 and is_job_id(job_id)
    # What a path or a poll may carry instead; the trailing newline passed the old check.
    for bad in (job_id[:-1], job_id + "A", job_id + "\n", "\n" + job_id[1:], job_id[:21] + "/", job_id[:21] + "=",
                job_id[:21] + ".", job_id[:21] + "\u00e9", "../../etc/passwd/xyzw", " " * 22, ""):
        assert not is_job_id(bad), repr(bad)


def test_job_ids_never_begin_with_a_dash_so_command_lines_take_them_as_arguments():
    # One id in 64 began with "-" and `m2fp status -abc...` failed with "No such option".
    # 5,000 draws of the old generator hold such an id with probability 1 - (63/64)**5000.
    assert not [job_id for job_id in (new_job_id() for _ in range(5000)) if job_id.startswith("-")]


def test_record_round_trip_and_expiry(job_store):
    job = job_store.create(new_job_id(), INPUT, Priority.BACKFILL, SourceRef(bucket="b", key="k.jpg"))
    assert job_store.get(job.id) == job
    assert job.source.uri() == "s3://b/k.jpg" and job.priority is Priority.BACKFILL
    ttl = job_store.client.ttl(job_store.prefix + job.id)
    assert 0 < ttl <= 3600
    assert job_store.get(new_job_id()) is None


def test_happy_path_and_terminal_states(job_store):
    job = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    running = job_store.start(job.id, worker="w@host", message_id="m1")
    assert running.status is JobStatus.RUNNING and (running.attempts, running.lost, running.worker) == (1, 0, "w@host")
    done = job_store.succeed(job.id, JobResult(outputs={}, summary={"persons": 0}))
    assert job_store.get(job.id) == done and done.finished_at and done.result.summary == {"persons": 0}
    for step in (lambda: job_store.start(job.id, None, None), lambda: job_store.requeue(job.id, JobError(
            code="x", message="y")), lambda: job_store.fail(job.id, JobError(code="x", message="y")),
            lambda: job_store.succeed(job.id, JobResult(outputs={}, summary={}))):
        with pytest.raises(InvalidTransition):
            step()


def test_queued_cannot_succeed_or_requeue_without_running(job_store):
    job = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    with pytest.raises(InvalidTransition):
        job_store.succeed(job.id, JobResult(outputs={}, summary={}))
    with pytest.raises(InvalidTransition):
        job_store.requeue(job.id, JobError(code="x", message="y"))
    with pytest.raises(KeyError):
        job_store.start(new_job_id(), None, None)


def test_a_restart_while_running_counts_a_lost_worker_and_requeue_keeps_the_error(job_store):
    job = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    job_store.start(job.id, "a", "m1")
    again = job_store.start(job.id, "b", "m1")  # redelivered: its first worker died
    assert (again.attempts, again.lost, again.worker) == (2, 1, "b")
    waiting = job_store.requeue(job.id, JobError(code="storage_unavailable", message="down"))
    assert waiting.status is JobStatus.QUEUED and waiting.last_error.code == "storage_unavailable"
    assert (waiting.attempts, waiting.worker, waiting.started_at) == (2, "b", again.started_at)
    assert job_store.start(job.id, "c", "m2").last_error is None


def test_of_two_messages_starting_one_job_at_once_exactly_one_runs_it(job_store):
    """Two messages for one job (a move to the interactive queue, a sweeper's resend in
    a race) read it ``queued`` at the same instant: the check and the write are one
    transaction, so the second start is refused instead of counting a death."""
    for _ in range(20):
        job = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
        start = threading.Barrier(2)

        def take(message_id: str):
            start.wait(timeout=10)
            try:
                return job_store.start(job.id, "w-" + message_id, message_id)
            except RunsUnderAnotherMessage:
                return None

        with ThreadPoolExecutor(2) as pool:
            started = [result for result in pool.map(take, ("m1", "m2")) if result is not None]
        record = job_store.get(job.id)
        assert len(started) == 1 and (record.attempts, record.lost) == (1, 0)
        assert record.message_id == started[0].message_id


def test_promote_only_raises_a_waiting_backfill_job(job_store):
    job = job_store.create(new_job_id(), INPUT, Priority.BACKFILL)
    assert job_store.promote(job.id).priority is Priority.INTERACTIVE
    assert job_store.promote(job.id) is None  # already interactive
    other = job_store.create(new_job_id(), INPUT, Priority.BACKFILL)
    job_store.start(other.id, None, None)
    assert job_store.promote(other.id) is None and job_store.get(other.id).priority is Priority.BACKFILL
    assert job_store.promote(new_job_id()) is None


def test_a_misspelled_field_is_an_error_not_a_silent_drop(job_store):
    job = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    with pytest.raises(pydantic.ValidationError):
        Job.model_validate({**job.model_dump(), "atempts": 1})
    with pytest.raises(pydantic.ValidationError):
        job.attempts = "many"


def test_cancel_ends_a_queued_job_at_once_and_marks_a_running_one(job_store):
    queued = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    canceled = job_store.request_cancel(queued.id)
    assert canceled.status is JobStatus.CANCELED and canceled.finished_at
    with pytest.raises(InvalidTransition):
        job_store.request_cancel(queued.id)
    with pytest.raises(InvalidTransition):
        job_store.start(queued.id, None, None)

    running = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    job_store.start(running.id, "w", "m")
    marked = job_store.request_cancel(running.id)
    assert marked.status is JobStatus.RUNNING and marked.cancel_requested and job_store.cancel_pending(running.id)
    stopped = job_store.stop(running.id)
    assert stopped.status is JobStatus.CANCELED and stopped.result is None


def test_a_cancel_that_lands_while_outputs_are_stored_still_wins(job_store):
    job = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    job_store.start(job.id, "w", "m")
    job_store.request_cancel(job.id)
    ended = job_store.succeed(job.id, JobResult(outputs={"labels.png": "k"}, summary={}))
    assert ended.status is JobStatus.CANCELED and ended.result is None


def test_canceled_content_may_be_submitted_again(job_store):
    job, created = job_store.create_for_content(new_job_id(), INPUT.sha256, INPUT, Priority.INTERACTIVE, tenant="t")
    assert created and job_store.job_for_content("t", INPUT.sha256).id == job.id
    job_store.request_cancel(job.id)
    assert job_store.job_for_content("t", INPUT.sha256) is None


def test_create_never_overwrites_a_record(job_store):
    job = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    job_store.start(job.id, "w", "m")
    with pytest.raises(InvalidTransition):
        job_store.create(job.id, INPUT, Priority.BACKFILL)
    kept = job_store.get(job.id)
    assert (kept.status, kept.priority, kept.attempts) == (JobStatus.RUNNING, Priority.INTERACTIVE, 1)


def test_every_status_a_step_writes_is_one_the_transition_table_allows(job_store, monkeypatch):
    # The table is the single authority: a step that would write a status the table
    # does not allow from the current one is refused, whichever step it is.
    queued = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    running = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    job_store.start(running.id, "w", "m")
    job_store.request_cancel(running.id)
    narrower = {**TRANSITIONS, JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED}),
                JobStatus.RUNNING: TRANSITIONS[JobStatus.RUNNING] - {JobStatus.CANCELED}}
    monkeypatch.setattr("common.jobs.TRANSITIONS", narrower)
    with pytest.raises(InvalidTransition):
        job_store.request_cancel(queued.id)  # queued -> canceled
    with pytest.raises(InvalidTransition):
        job_store.succeed(running.id, JobResult(outputs={}, summary={}))  # running -> canceled, via succeed
    assert job_store.get(queued.id).status is JobStatus.QUEUED
    assert job_store.get(running.id).status is JobStatus.RUNNING


def test_a_record_with_fields_this_process_does_not_know_is_still_read(job_store):
    # A newer process may add fields, top-level and nested; reads ignore them, steps keep them.
    job = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE, webhook=Webhook(
        url="https://example.com/hook", events=[WebhookEvent.SUCCEEDED], links_base="http://api/"))
    key = job_store.prefix + job.id
    job_store.client.hset(key, mapping={
        "region": json.dumps("eu-west"),
        "input": json.dumps({**INPUT.model_dump(), "exif": {"orientation": 6}}),
        "webhook": json.dumps({**job.webhook.model_dump(mode="json"), "secret_version": 2})})
    assert job_store.get(job.id) == job
    assert job_store.get_many([job.id]) == [job]
    started = job_store.start(job.id, "w", "m")
    assert started.status is JobStatus.RUNNING and started.input == INPUT
    assert json.loads(job_store.client.hget(key, "region")) == "eu-west"  # not the step's to remove


def test_a_step_that_writes_an_unknown_field_is_refused(job_store):
    job = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    with pytest.raises(pydantic.ValidationError):
        job_store._step(job.id, JobStatus.RUNNING, lambda job: {"atempts": 1})
    assert job_store.get(job.id).status is JobStatus.QUEUED
