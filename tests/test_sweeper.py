"""No job is ever stranded: real workers, real Redis, faults from the tests' harness.

Each test would wait forever on the code before the sweeper: a job whose worker died
waited a whole visibility timeout (an hour here), a failure that could not be recorded
left the job ``running`` until its record expired, and a record without a message
stayed ``queued``.
"""
import dataclasses
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from common.jobs import InputInfo, JobError, JobStatus, Priority, input_key, new_job_id
from common.job_store import JobStore
from common.liveness import ModelProcesses
from common.services import Services
from common.settings import Settings
from common.storage import LocalStore
from m2fp_contract.errors import ErrorCode
from scripts.imagegen import photo_jpeg
from scripts.processes import wait_until
from scripts.stack import Stack
from tests.harness import HARNESS_APP, HOLD_FILE_VARIABLE, UNRECORDABLE_FAILURE_VARIABLE
from tests.test_worker_faults import hold_a_job
from worker.sweeper import DUE, Sweeper

QUICK = {"WORKER_HEARTBEAT_SECONDS": "0.2", "STRANDED_AFTER_SECONDS": "1.5", "SWEEP_INTERVAL_SECONDS": "0.3"}


@pytest.fixture()
def sweep_stack(redis_server, tiny_model, tmp_path):
    hold = tmp_path / "hold"
    env = {
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/4",
        "M2FP_MODEL": str(tiny_model),
        "INFERENCE_MAX_SIDE": "320",
        "TORCH_THREADS": "1",
        "LOCAL_STORE_DIR": str(tmp_path / "store"),
        HOLD_FILE_VARIABLE: str(hold),
        # An hour: only the sweeper can bring a lost job back within the test.
        "VISIBILITY_TIMEOUT": "3600",
        **QUICK,
    }
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    running = Stack(env=env, log_dir=tmp_path, worker_app=HARNESS_APP).start_api()
    yield running, hold
    running.stop()


def test_a_job_whose_whole_worker_was_killed_is_queued_again_by_the_sweep(sweep_stack):
    stack, hold = sweep_stack
    doomed = stack.start_worker("doomed")
    job_id, _ = hold_a_job(stack, hold)
    doomed.kill()  # SIGKILL to its process group: its message sits unacked for an hour
    hold.unlink()
    rescuer = stack.start_worker("rescuer")
    job = stack.wait_for(job_id, timeout=120)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    assert job["worker"].startswith("rescuer@")
    assert f"job {job_id}: its process" in rescuer.log_text() and "queued it again" in rescuer.log_text()


def test_a_failure_that_cannot_be_recorded_hands_the_message_back(sweep_stack, tmp_path):
    stack, _ = sweep_stack
    marker = tmp_path / "unrecordable"
    marker.touch()
    # No sweep may step in (an hour before a job counts as stranded, and the visibility
    # timeout is an hour too): only the handed-back message can run the job again.
    worker = stack.start_worker("w", STRANDED_AFTER_SECONDS="3600", **{UNRECORDABLE_FAILURE_VARIABLE: str(marker)})
    job_id = stack.submit(photo_jpeg(96, 64)).json()["id"]
    job = stack.wait_for(job_id, timeout=120)
    assert not marker.exists()  # the first failure write did meet the Redis error
    assert job["status"] == "failed" and job["error"]["code"] == "internal_error", job
    assert job["attempts"] == 2 and worker.alive()
    assert "handing its message back" in worker.log_text() and "queued it again" not in worker.log_text()
    # The client reads a plain sentence; the exception is in the worker's log under the job's id.
    assert job["error"]["message"] == ("the worker failed on this job; its operator can find the cause in the "
                                       "worker's log under the job's id")
    assert f"job {job_id} failed unexpectedly" in worker.log_text()
    assert "RuntimeError: the model failed on this input" in worker.log_text()


def test_a_live_worker_keeps_a_job_it_runs_longer_than_the_stranded_age(sweep_stack):
    """The worker's heartbeat thread says which job its process runs, through a job
    held past STRANDED_AFTER_SECONDS: a sweep then leaves the job where it is."""
    stack, hold = sweep_stack
    worker = stack.start_worker("w")
    job_id, _ = hold_a_job(stack, hold)
    services = Services.create(Settings(redis_url=stack.env["REDIS_URL"],
                                        local_store_dir=stack.env["LOCAL_STORE_DIR"], **{
                                            key.lower(): value for key, value in QUICK.items()}))
    stranded_after = services.settings.stranded_after_seconds
    wait_until(lambda: job_id in services.jobs.in_state_since(JobStatus.RUNNING, time.time() - stranded_after),
               30, "the job to run for longer than STRANDED_AFTER_SECONDS")
    swept = Sweeper(services).sweep()
    assert swept.requeued == swept.failed == [] and stack.job(job_id)["status"] == "running"
    hold.unlink()
    job = stack.wait_for(job_id, timeout=120)
    assert (job["status"], job["attempts"], services.jobs.get(job_id).lost) == ("succeeded", 1, 0), job
    assert "queued it again" not in worker.log_text()  # nor did the worker's own sweeps


def test_a_queued_job_without_a_message_gets_one(sweep_stack, tmp_path):
    """The API wrote the record, then its process died before the message was sent."""
    stack, _ = sweep_stack
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    data = photo_jpeg(80, 60)
    job_id = new_job_id()
    LocalStore(tmp_path / "store").put(input_key(job_id), data, "application/octet-stream")
    info = InputInfo(width=80, height=60, format="JPEG", bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    JobStore(client, 3600).create(job_id, info, Priority.BACKFILL)
    worker = stack.start_worker("w")
    job = stack.wait_for(job_id, timeout=120)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert f"job {job_id} was queued without a message in Redis; sent it again" in worker.log_text()


# ---- the sweep's decisions, one at a time, on a real Redis --------------------------

INPUT = InputInfo(width=3, height=2, format="JPEG", bytes=10, sha256="0" * 64)


@pytest.fixture()
def sweeper(services):
    quick = services.settings.model_copy(update={"worker_heartbeat_seconds": 0.05, "stranded_after_seconds": 0.2,
                                                "max_attempts": 2})
    sent = []

    class Recording(type(services.queue)):
        def send(self, job_id, priority):
            sent.append(job_id)

    queue = Recording(quick, services.redis)
    sweeper = Sweeper(dataclasses.replace(services, settings=quick, queue=queue))
    sweeper.sent = sent
    return sweeper


def running_job(job_store: JobStore, process: str) -> str:
    job = job_store.create(new_job_id(), INPUT, Priority.INTERACTIVE)
    job_store.start(job.id, "w@host", "m1", process=process)
    return job.id


def test_a_live_process_that_claims_its_job_keeps_it(sweeper, job_store):
    processes: ModelProcesses = sweeper.services.queue.processes
    job_id = running_job(job_store, "host:1:a")
    stranded_after = sweeper.settings.stranded_after_seconds

    def swept_as_a_candidate() -> bool:
        processes.beat("host:1:a", job_id)
        if job_id not in job_store.in_state_since(JobStatus.RUNNING, time.time() - stranded_after):
            return False  # not yet running for STRANDED_AFTER: the sweep would not even look
        sweeper.sweep()
        return True

    wait_until(swept_as_a_candidate, 10, "the job to be old enough for the sweep to judge it")
    assert job_store.get(job_id).status is JobStatus.RUNNING and sweeper.sent == []


def test_a_live_process_that_moved_on_loses_the_job_and_a_silent_one_too(sweeper, job_store):
    processes: ModelProcesses = sweeper.services.queue.processes
    moved_on = running_job(job_store, "host:1:a")
    silent = running_job(job_store, "host:2:b")
    processes.beat("host:1:a", None)  # alive, idle: its failure was never recorded
    processes.beat("host:2:b", silent)

    def recovered() -> bool:
        processes.beat("host:1:a", None)
        sweeper.sweep()
        return set(sweeper.sent) == {moved_on, silent}

    wait_until(recovered, 10, "both jobs to be queued again")
    for job_id in (moved_on, silent):
        job = job_store.get(job_id)
        assert job.status is JobStatus.QUEUED and job.lost == 1 and job.last_error.code == "worker_lost"


def test_a_job_lost_max_attempts_times_fails_worker_lost(sweeper, job_store):
    job_id = running_job(job_store, "host:9:z")  # never heard from
    wait_until(lambda: job_id in sweeper.sweep().requeued, 10, "the first recovery")
    job_store.start(job_id, "w@host", "m2", process="host:9:y")
    wait_until(lambda: job_id in sweeper.sweep().failed, 10, "the second recovery")
    job = job_store.get(job_id)
    assert job.status is JobStatus.FAILED and job.error.code == "worker_lost" and job.lost == 2
    assert "2 times" in job.error.message


def test_recover_leaves_a_job_that_started_again_meanwhile(job_store):
    job_id = running_job(job_store, "host:1:a")
    judged = job_store.get(job_id)
    # Its message, redelivered to another process, restarted it after the sweep's read
    # (often within the same millisecond: its start time may be the judged one's).
    job_store.start(job_id, "w@other", "m1", process="host:3:c")
    error = JobError.of(ErrorCode.WORKER_LOST, "lost")
    assert job_store.recover(job_id, judged, error, error, max_lost=3) is None
    assert job_store.get(job_id).process == "host:3:c"


def test_a_sweep_still_running_past_the_interval_is_not_joined_by_the_next(sweeper):
    """One sweeper at a time: a sweep that outlasts SWEEP_INTERVAL_SECONDS (a large
    backlog, a slow Redis) holds off the next sweeper, which would resend the same jobs."""
    settings = sweeper.settings.model_copy(update={"sweep_interval_seconds": 0.05})
    services = dataclasses.replace(sweeper.services, settings=settings)
    inside, finish = threading.Event(), threading.Event()

    class Slow(Sweeper):
        def sweep(self):
            inside.set()
            assert finish.wait(30)
            return super().sweep()

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(Slow(services).sweep_if_due)
        assert inside.wait(30)
        client = services.redis
        wait_until(lambda: not client.exists(DUE), 10, "the interval to pass while the first sweep runs")
        assert Sweeper(services).sweep_if_due() is None
        finish.set()
        assert slow.result(timeout=30) is not None
    wait_until(lambda: not client.exists(DUE), 10, "the next interval")
    assert Sweeper(services).sweep_if_due() is not None  # the lock went with the sweep


def test_one_sweep_per_interval_across_sweepers(sweeper):
    other = Sweeper(sweeper.services)
    first, second = sweeper.sweep_if_due(), other.sweep_if_due()
    assert (first is None) != (second is None)
