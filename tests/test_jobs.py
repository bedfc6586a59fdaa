"""The job record and its state machine, on a real Redis."""
import pytest

from common.jobs import InvalidTransition, Job, JobStatus, is_job_id, new_job_id


def test_job_ids_are_random_and_url_safe():
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_job_id(i) and len(i) == 22 for i in ids)
    assert not is_job_id("../../etc") and not is_job_id("short")


def test_record_round_trip_and_expiry(job_store):
    job = Job.new(new_job_id(), {"width": 3, "height": 2})
    job_store.create(job)
    assert job_store.get(job.id) == job
    ttl = job_store.client.ttl(job_store.prefix + job.id)
    assert 0 < ttl <= 3600
    assert job_store.get(new_job_id()) is None


def test_happy_path_and_terminal_states(job_store):
    job = Job.new(new_job_id(), {})
    job_store.create(job)
    running = job_store.transition(job.id, JobStatus.RUNNING, attempts=1)
    assert running.status is JobStatus.RUNNING and running.attempts == 1
    done = job_store.transition(job.id, JobStatus.SUCCEEDED, result={"outputs": {}})
    assert job_store.get(job.id) == done
    for target in JobStatus:
        with pytest.raises(InvalidTransition):
            job_store.transition(job.id, target)


def test_queued_cannot_succeed_without_running(job_store):
    job = Job.new(new_job_id(), {})
    job_store.create(job)
    with pytest.raises(InvalidTransition):
        job_store.transition(job.id, JobStatus.SUCCEEDED)
    with pytest.raises(KeyError):
        job_store.transition(new_job_id(), JobStatus.RUNNING)
