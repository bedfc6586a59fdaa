"""Faults across hosts: Redis, the API and two workers each on a host of its own (network
namespaces on one bridge, tests/harness/hosts.py), real processes, real TCP between
them. A host's network fails under it, then comes back: no accepted job is lost, none
stays ``running``, and the cut worker rejoins without a restart."""
from __future__ import annotations

import secrets
import time

import pytest
import redis as redis_lib
import requests

from common.job_store import JobStore
from common.jobs import JobStatus
from scripts.imagegen import photo_jpeg
from scripts.processes import RedisServer, wait_until
from scripts.stack import Stack
from tests.harness import HARNESS_APP, HOLD_FILE_VARIABLE
from tests.harness.hosts import Network
from tests.test_worker_faults import holding_pids

REDIS_PORT, API_PORT = 6379, 8000


@pytest.fixture(scope="module")
def hosts(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("hosts")
    network = Network()
    try:
        redis_host = network.add("redis", front=True)  # the tests read the records through the front
        api_host = network.add("api", front=True)
        worker_hosts = [network.add("w1"), network.add("w2")]
        password = secrets.token_urlsafe(16)
        redis = RedisServer(base / "redis", port=REDIS_PORT, password=password, bind="0.0.0.0",
                            prefix=redis_host.command([]), reach=redis_host.front_address).start()
        hold = base / "hold"
        env = {
            "REDIS_URL": f"redis://:{password}@{redis_host.address}:{REDIS_PORT}/0",
            "M2FP_MODEL": str(tiny_model), "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1",
            "LOCAL_STORE_DIR": str(base / "store"),  # a shared disk: the network is what fails here
            "WORKER_HEARTBEAT_SECONDS": "1", "STRANDED_AFTER_SECONDS": "5", "SWEEP_INTERVAL_SECONDS": "1",
            "VISIBILITY_TIMEOUT": "3600",  # only the sweeper may hand a cut worker's job on
        }
        stack = Stack(env=env, log_dir=base, worker_app=HARNESS_APP)
        stack.start_api(API_PORT, bind="0.0.0.0", reach=api_host.front_address, prefix=api_host.command([]))
        workers = {host.name.rsplit("-", 1)[1]: stack.start_worker(
            host.name.rsplit("-", 1)[1], prefix=host.command([]), **{HOLD_FILE_VARIABLE: str(hold)})
            for host in worker_hosts}
        store = JobStore(redis_lib.Redis.from_url(redis.url), 3600)
        for name, worker in workers.items():
            wait_until(lambda: f"{name}@" in worker.log_text() and " ready." in worker.log_text(), 120,
                       f"worker {name} to start")
        yield network, stack, workers, store, hold
    finally:
        try:
            stack.stop()
            redis.stop()
        finally:
            network.remove()


def never_running(store: JobStore) -> list[str]:
    return store.in_state_since(JobStatus.RUNNING, time.time() + 1)


def test_a_worker_host_cut_off_mid_job_loses_nothing_and_rejoins(hosts):
    network, stack, workers, store, hold = hosts
    hold.touch()
    job_id = stack.submit(photo_jpeg(64, 48, seed=1)).json()["id"]
    wait_until(lambda: holding_pids(hold), 60, "a worker to take the job")
    taker = stack.job(job_id)["worker"].split("@")[0]
    other = next(name for name in workers if name != taker)
    network.cut(taker)
    # The other worker's sweep finds the cut host's process silent and queues the job
    # again; the other worker runs it (its own hold released for it).
    hold.unlink()
    job = stack.wait_for(job_id, timeout=120)
    assert job["status"] == "succeeded" and job["worker"].startswith(f"{other}@"), job
    assert f"job {job_id}: its process" in workers[other].log_text()

    network.restore(taker)
    # The cut worker's own copy ends in one of two ways, neither of which touches the job's
    # ending: it could not record its result while cut (a retry, whose message, once sent,
    # finds the job ended), or it records it after the cut and finds the job ended first.
    ended_elsewhere = [f"job {job_id} ended succeeded in another run", f"job {job_id} is already succeeded"]
    wait_until(lambda: any(line in worker.log_text() for line in ended_elsewhere for worker in workers.values()),
               120, "the cut worker's copy of the job to meet the job's ending")
    assert stack.job(job_id)["worker"].startswith(f"{other}@") and stack.job(job_id)["status"] == "succeeded"
    # It rejoined without a restart: with the other worker busy, it takes the next job.
    hold.touch()
    busy = stack.submit(photo_jpeg(64, 48, seed=2)).json()["id"]
    # Its own state, not the hold markers: the first job's holder left its marker behind.
    wait_until(lambda: stack.job(busy)["status"] == "running", 60, "a worker to hold a job")
    holder = stack.job(busy)["worker"].split("@")[0]
    nxt = stack.submit(photo_jpeg(64, 48, seed=3)).json()["id"]
    wait_until(lambda: stack.job(nxt)["status"] != "queued", 120, "the free worker to take the next job")
    hold.unlink()
    assert {stack.wait_for(busy)["status"], stack.wait_for(nxt)["status"]} == {"succeeded"}
    assert {holder, stack.job(nxt)["worker"].split("@")[0]} == {taker, other}
    assert all(worker.alive() for worker in workers.values())
    assert never_running(store) == []


def test_the_api_cut_off_from_redis_answers_503_and_loses_nothing(hosts):
    network, stack, workers, store, _ = hosts
    before = [stack.submit(photo_jpeg(64, 48, seed=10 + i)).json()["id"] for i in range(3)]
    network.cut("api")
    refused = stack.submit(photo_jpeg(64, 48, seed=20))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_unavailable"
    assert int(refused.headers["Retry-After"]) > 0
    polled = requests.get(f"{stack.api_url}/v1/jobs/{before[0]}", timeout=30)
    assert polled.status_code == 503  # unknown, not "missing": the record is still there
    # The workers, on their own hosts, went on meanwhile.
    wait_until(lambda: all(store.get(job_id).status is JobStatus.SUCCEEDED for job_id in before), 120,
               "the workers to finish the jobs accepted before the cut")
    network.restore("api")
    wait_until(lambda: requests.get(f"{stack.api_url}/readyz", timeout=30).ok, 60, "the API to reach Redis again")
    after = stack.submit(photo_jpeg(64, 48, seed=21))
    assert after.status_code == 202
    assert stack.wait_for(after.json()["id"])["status"] == "succeeded"
    assert [stack.job(job_id)["status"] for job_id in before] == ["succeeded"] * 3
    assert never_running(store) == []
    assert all(worker.alive() for worker in workers.values())
