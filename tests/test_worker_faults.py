"""Jobs survive dead workers; workers refuse to start without a model.

Real processes throughout: the killed worker is SIGKILLed mid-job (held just before
inference by the test harness's holding engine, after the job shows ``running``).
"""
import os
import re
import signal

import pytest

from scripts.processes import wait_until
from scripts.imagegen import photo_jpeg
from scripts.stack import Stack
from tests.harness import HARNESS_APP, HOLD_FILE_VARIABLE, STOP_CONSUMING_VARIABLE
from worker.consumption_guard import ConsumptionGuard


@pytest.fixture()
def fault_stack(redis_server, tiny_model, tmp_path):
    hold = tmp_path / "hold"
    env = {
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/3",
        "M2FP_MODEL": str(tiny_model),
        "INFERENCE_MAX_SIDE": "320",
        "TORCH_THREADS": "1",
        "LOCAL_STORE_DIR": str(tmp_path / "store"),
        HOLD_FILE_VARIABLE: str(hold),
        # Short delivery timeouts so a lost job comes back within seconds in the test.
        "TASK_SOFT_TIME_LIMIT": "11",
        "TASK_TIME_LIMIT": "13",
        "VISIBILITY_TIMEOUT": "30",
        "RETRY_BACKOFF_MAX": "3",  # a retry waits, waits for its process and runs inside the visibility timeout
        "UNACKED_RESTORE_INTERVAL": "1",
    }
    import redis

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    running = Stack(env=env, log_dir=tmp_path, worker_app=HARNESS_APP).start_api()
    yield running, hold
    running.stop()


def hold_a_job(stack: Stack, hold) -> tuple[str, int]:
    """Submit a job and wait until a worker holds it, running; return its id and the pid."""
    hold.touch()
    job_id = stack.submit(photo_jpeg(160, 120)).json()["id"]
    wait_until(lambda: holding_pids(hold), 120, "a worker to take the job")
    assert stack.job(job_id)["status"] == "running"
    return job_id, holding_pids(hold)[0]


def holding_pids(hold) -> list[int]:
    """Pids of the processes holding a job (each writes its marker next to the hold file)."""
    return [int(p.read_text()) for p in hold.parent.glob("holding-*") if p.read_text()]


def test_job_survives_its_whole_worker_being_sigkilled(fault_stack):
    stack, hold = fault_stack
    first = stack.start_worker("doomed")
    job_id, _ = hold_a_job(stack, hold)
    first.kill()  # SIGKILL to the worker's whole process group: no ack, no cleanup
    hold.unlink()
    stack.start_worker("rescuer")
    job = stack.wait_for(job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert "rescuer" in stack.workers[1].log_text() and job_id in stack.workers[1].log_text()


def test_job_survives_its_pool_process_being_sigkilled(fault_stack):
    stack, hold = fault_stack
    worker = stack.start_worker("w")
    job_id, pool_pid = hold_a_job(stack, hold)
    assert pool_pid != worker.pid
    hold.unlink()
    os.kill(pool_pid, signal.SIGKILL)  # the parent survives, sees the loss and requeues
    job = stack.wait_for(job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2 and worker.alive()
    assert job["result"]["summary"]["model"]["engine"] == "openvino"  # the fault tests run the default engine


def test_a_storage_fault_puts_the_job_back_and_a_retry_finishes_it(fault_stack, tmp_path):
    stack, hold = fault_stack
    worker = stack.start_worker("w")
    job_id, _ = hold_a_job(stack, hold)
    blocker = tmp_path / "store" / "jobs" / job_id / "colored.png"
    blocker.mkdir(parents=True)  # a directory where the output goes: every write of it fails
    hold.unlink()
    waiting = stack.wait_for(job_id, statuses={"queued", "succeeded", "failed"})
    assert waiting["status"] == "queued" and waiting["last_error"]["code"] == "storage_unavailable", waiting
    # The client reads a plain sentence; the path and the OS error go to the worker's log, with the job id.
    assert waiting["last_error"]["message"] == "the object store was unavailable; the job waits and is tried again"
    assert f"job {job_id}: storage_unavailable (local store write failed at {blocker}" in worker.log_text()
    blocker.rmdir()
    job = stack.wait_for(job_id)
    assert job["status"] == "succeeded" and job["attempts"] >= 2 and job.get("last_error") is None, job
    assert worker.alive()


@pytest.mark.parametrize("model, message", [
    ("/nonexistent/m2fp", "M2FP_MODEL=/nonexistent/m2fp is not a directory"),
    ("damo/cv_resnet101_image-multiple-human-parsing", "Set M2FP_MODEL to a local model directory"),
])
def test_worker_without_a_model_stops_at_start_with_the_fix(fault_stack, tmp_path, model, message):
    stack, _ = fault_stack
    # The hub is pointed at a closed local port, so "offline" holds on any machine.
    worker = stack.start_worker("nomodel", M2FP_MODEL=model, MODEL_CACHE_DIR=str(tmp_path / "cache"),
                                MODELSCOPE_DOMAIN="127.0.0.1:9")
    assert worker.popen.wait(timeout=120) != 0
    log = worker.log_text()
    assert message in log, log[-3000:]
    assert "ready" not in log.split(message)[-1]


def test_a_worker_that_stops_taking_jobs_while_jobs_wait_shuts_down_and_the_job_waits_for_the_next(fault_stack):
    stack, _ = fault_stack
    stalled = stack.start_worker("stalled", WORKER_STALL_SECONDS="2", **{STOP_CONSUMING_VARIABLE: "1"})
    wait_until(lambda: "ready." in stalled.log_text(), 120, "the worker to be ready")
    job_id = stack.submit(photo_jpeg(160, 120, seed=7)).json()["id"]
    stalled.popen.wait(timeout=60)  # it shuts itself down (raises if it never does)
    log = stalled.log_text()
    assert "has taken no job for" in log and "jobs wait in its queues and 1 of its 1 processes are free" in log, log[-3000:]
    assert stack.job(job_id)["status"] == "queued"
    stack.start_worker("next")
    assert stack.wait_for(job_id)["status"] == "succeeded"


def test_a_busy_or_consuming_worker_is_never_taken_for_a_stalled_one():
    now = [0.0]
    waiting, held, stops = [1], [0], []
    guard = ConsumptionGuard(lambda: waiting[0], lambda: held[0], capacity=2, stall_seconds=30,
                             stop=lambda: stops.append(now[0]), clock=lambda: now[0])
    for step in range(20):  # jobs wait, but every process holds one: busy, not stalled
        now[0], held[0] = step * 5.0, 2
        guard.check()
    held[0] = 1
    for step in range(20, 40):  # room, but the queue empties now and then: it consumes
        now[0], waiting[0] = step * 5.0, (step + 1) % 5  # empty at the last step
        guard.check()
    assert stops == []
    waiting[0] = 3
    now[0] = 195.0
    guard.check()  # counting from 195 s, but Redis cannot be read at 200 s: counted again after it
    waiting_before, guard.waiting = guard.waiting, lambda: 1 / 0
    now[0] = 200.0
    with pytest.raises(ZeroDivisionError):
        guard.check()
    guard.waiting = waiting_before
    for step in range(40, 48):  # room and waiting jobs in every check for 30 s: stalled
        now[0] = step * 5.0
        guard.check()
    assert stops == [230.0]


def test_job_over_its_time_limit_fails_and_the_worker_serves_on(fault_stack):
    stack, hold = fault_stack
    worker = stack.start_worker("slow", TASK_SOFT_TIME_LIMIT="2")
    job_id, _ = hold_a_job(stack, hold)  # held past the soft limit: the limit fires inside the job
    job = stack.wait_for(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "inference_timeout", job
    hold.unlink()
    after = stack.submit(photo_jpeg(64, 64)).json()["id"]
    assert stack.wait_for(after)["status"] == "succeeded" and worker.alive()


def test_job_over_its_hard_time_limit_fails_and_a_fresh_process_serves_on(fault_stack):
    """Stuck where the soft limit cannot reach it (native code), the job's pool process
    is killed at the hard limit; the job ends failed, and the worker replaces the process."""
    stack, hold = fault_stack
    worker = stack.start_worker("stuck", TASK_SOFT_TIME_LIMIT="2", TASK_TIME_LIMIT="4")
    hold.write_text("deaf")
    job_id, pool_pid = hold_a_job(stack, hold)
    job = stack.wait_for(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "inference_timeout", job
    assert "stopped after 4 s" in job["error"]["message"]
    hold.unlink()
    after = stack.submit(photo_jpeg(64, 64)).json()["id"]
    done = stack.wait_for(after)
    assert done["status"] == "succeeded" and worker.alive()
    ready = re.findall(r"worker process (\d+) ready", worker.log_text())
    assert len(ready) == 2 and int(ready[0]) == pool_pid != int(ready[1]), ready


def test_queued_job_survives_a_redis_restart(tiny_model, tmp_path):
    """Redis persists its queue and job records (append-only file); a restart in
    between submit and work only delays the job, and the API answers 503, not 500."""
    from scripts.processes import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    env = {"REDIS_URL": server.url, "M2FP_MODEL": str(tiny_model), "INFERENCE_MAX_SIDE": "320",
           "TORCH_THREADS": "1", "LOCAL_STORE_DIR": str(tmp_path / "store")}
    stack = Stack(env=env, log_dir=tmp_path).start_api()
    try:
        job_id = stack.submit(photo_jpeg(96, 64)).json()["id"]
        server.stop()
        down = stack.submit(photo_jpeg(96, 64))
        assert down.status_code == 503 and down.json()["error"]["code"] == "queue_unavailable"
        server = RedisServer(tmp_path / "redis", port=server.port).start()
        assert stack.job(job_id)["status"] == "queued"
        stack.start_worker("after-restart")
        assert stack.wait_for(job_id)["status"] == "succeeded"
    finally:
        stack.stop()
        server.stop()


def test_a_hung_redis_gets_clients_a_503_not_a_dropped_connection(tiny_model, tmp_path):
    """A Redis that accepts connections but never answers (overloaded, stopped with
    SIGSTOP, a dead proxy) must not hold API requests past gunicorn's worker timeout."""
    import socket

    import requests

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)  # the kernel completes handshakes; nobody ever reads or answers
    env = {"REDIS_URL": f"redis://127.0.0.1:{hung.getsockname()[1]}/0", "M2FP_MODEL": str(tiny_model),
           "LOCAL_STORE_DIR": str(tmp_path / "store")}
    stack = Stack(env=env, log_dir=tmp_path)
    try:
        stack.start_api()
        ready = requests.get(f"{stack.api_url}/readyz", timeout=60)
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("unavailable")
        poll = requests.get(f"{stack.api_url}/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA", timeout=60)
        assert poll.status_code == 503 and poll.json()["error"]["code"] == "queue_unavailable"
        submit = stack.submit(photo_jpeg(64, 48))
        assert submit.status_code == 503 and submit.json()["error"]["code"] == "queue_unavailable"
    finally:
        stack.stop()
        hung.close()


def test_running_worker_reconnects_after_a_redis_restart(tiny_model, tmp_path):
    from scripts.processes import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    env = {"REDIS_URL": server.url, "M2FP_MODEL": str(tiny_model), "INFERENCE_MAX_SIDE": "64",
           "TORCH_THREADS": "1", "LOCAL_STORE_DIR": str(tmp_path / "store")}
    stack = Stack(env=env, log_dir=tmp_path).start_api()
    try:
        worker = stack.start_worker("steady")
        assert stack.wait_for(stack.submit(photo_jpeg(64, 64, seed=1)).json()["id"])["status"] == "succeeded"
        server.stop()
        server = RedisServer(tmp_path / "redis", port=server.port).start()
        after = stack.submit(photo_jpeg(64, 64, seed=2)).json()["id"]
        assert stack.wait_for(after, timeout=120)["status"] == "succeeded"
        assert worker.alive()
    finally:
        stack.stop()
        server.stop()


def test_a_running_job_canceled_stops_at_its_next_safe_point_and_publishes_nothing(fault_stack, tmp_path):
    import requests

    stack, hold = fault_stack
    worker = stack.start_worker("w")
    job_id, _ = hold_a_job(stack, hold)  # held inside inference: past the first safe point
    answer = requests.post(f"{stack.api_url}/v1/jobs/{job_id}/cancel", timeout=30)
    assert answer.status_code == 202 and answer.json()["cancel_requested"] is True, answer.json()
    assert answer.json()["status"] == "running"
    hold.unlink()
    job = stack.wait_for(job_id)
    assert job["status"] == "canceled" and "result" not in job and "cancel_requested" not in job, job
    assert not (tmp_path / "store" / "jobs" / job_id / "labels.png").exists()
    finished = requests.post(f"{stack.api_url}/v1/jobs/{job_id}/cancel", timeout=30)
    assert finished.status_code == 409 and finished.json()["error"]["code"] == "not_cancelable"
    after = stack.submit(photo_jpeg(64, 64)).json()["id"]
    assert stack.wait_for(after)["status"] == "succeeded" and worker.alive()


def test_queued_jobs_show_their_place_and_an_eta_behind_a_held_job(fault_stack):
    """One model process, held on a job: the jobs behind it know their place exactly (an
    interactive job before any backfill job), and ETAs grow with it by the measured
    per-job time. A canceled job leaves the order."""
    import requests

    stack, hold = fault_stack
    stack.start_worker("w")
    first = stack.submit(photo_jpeg(64, 64, seed=50)).json()["id"]
    assert stack.wait_for(first)["status"] == "succeeded"  # one measured service time
    held, _ = hold_a_job(stack, hold)
    interactive = [stack.submit(photo_jpeg(64, 64, seed=51 + i)).json()["id"] for i in range(3)]
    backfill = requests.post(f"{stack.api_url}/v1/jobs", files={"image": ("b.jpg", photo_jpeg(64, 64, seed=60))},
                             data={"priority": "backfill"}, timeout=30).json()["id"]
    places = {job["id"]: job.get("queue") for job in requests.get(
        f"{stack.api_url}/v1/jobs", params={"ids": ",".join([held, *interactive, backfill])}, timeout=30).json()["jobs"]}
    assert places[held] is None  # running: no place in a queue
    assert [(places[i]["position"], places[i]["ahead"]) for i in interactive] == [(1, 0), (2, 1), (3, 2)]
    assert (places[backfill]["position"], places[backfill]["ahead"]) == (1, 3)
    per_job = places[interactive[0]]["eta_seconds"]
    assert per_job is not None and per_job > 0
    for job_id, jobs_until_started in [(interactive[1], 2), (interactive[2], 3), (backfill, 4)]:
        # ETAs are rounded to 0.1 s: k * T and T each within 0.05 s of the values shown.
        assert abs(places[job_id]["eta_seconds"] - jobs_until_started * per_job) <= 0.05 * (jobs_until_started + 1)

    assert requests.post(f"{stack.api_url}/v1/jobs/{interactive[1]}/cancel", timeout=30).status_code == 200
    assert stack.job(interactive[2])["queue"]["position"] == 2 and stack.job(backfill)["queue"]["ahead"] == 2
    hold.unlink()
    for job_id in [held, interactive[0], interactive[2], backfill]:
        job = stack.wait_for(job_id)
        assert job["status"] == "succeeded" and "queue" not in job, job
