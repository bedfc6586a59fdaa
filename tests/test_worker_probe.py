"""The workers' liveness probe (common/worker_probe.py) against a real worker: its event
loop keeps the file fresh through a long job, and a wedged loop goes stale."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import redis

from scripts.imagegen import photo_jpeg
from scripts.processes import REPO, wait_until
from scripts.stack import Stack
from common.worker_probe import liveness_path
from tests.harness import HARNESS_APP, HOLD_FILE_VARIABLE
from tests.test_worker_faults import holding_pids


@pytest.fixture()
def probed(redis_server, tiny_model, tmp_path):
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/7", "M2FP_MODEL": str(tiny_model),
           "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1", "LOCAL_STORE_DIR": str(tmp_path / "store"),
           "WORKER_LIVENESS_DIR": str(tmp_path / "liveness"), HOLD_FILE_VARIABLE: str(tmp_path / "hold")}
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    stack = Stack(env=env, log_dir=tmp_path, worker_app=HARNESS_APP).start_api()
    yield stack, tmp_path
    stack.stop()


def probe(stack: Stack, max_age: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.worker_probe", "worker", "--max-age", str(max_age)],
                          cwd=REPO, capture_output=True, text=True, env=stack.process_env())


def test_the_probe_follows_the_workers_event_loop(probed):
    stack, base = probed
    missing = probe(stack, 60)
    assert missing.returncode == 1 and "has not started (still loading the model?)" in missing.stderr
    worker = stack.start_worker("w")
    wait_until(lambda: probe(stack, 60).returncode == 0, 120, "the probe to pass once the worker is up")

    # A job held far longer than the tick: the loop (in the main process) still ticks.
    hold = base / "hold"
    hold.touch()
    stack.submit(photo_jpeg(64, 48))
    wait_until(lambda: holding_pids(hold), 60, "the worker to take the job")
    path = liveness_path("worker", base / "liveness")
    touched = path.stat().st_mtime
    wait_until(lambda: path.stat().st_mtime > touched, 30, "a tick while the job runs", interval=0.5)
    assert probe(stack, 10).returncode == 0

    # The main process stopped (as wedged as a process gets): the file goes stale.
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: probe(stack, 2).returncode == 1, 30, "the probe to fail on a stopped event loop",
                   interval=0.5)
        assert "the worker's event loop has stopped ticking" in probe(stack, 2).stderr
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    wait_until(lambda: probe(stack, 2).returncode == 0, 30, "the probe to pass again", interval=0.5)
    hold.unlink()
