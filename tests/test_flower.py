"""Flower, the operators' view, against a real worker and Redis: it lists the workers
with task events off (the default), and the tasks only when WORKER_TASK_EVENTS is on."""
from __future__ import annotations

import secrets

import pytest
import redis
import requests

from scripts.imagegen import photo_jpeg
from scripts.processes import Process, free_port, python_module, wait_until
from scripts.stack import Stack


def start_flower(stack: Stack, password: str) -> tuple[Process, str]:
    """As docs/operations.md runs it: basic auth, and no enabling of events behind the
    operator's back (Flower otherwise turns them on in every worker it sees)."""
    port = free_port()
    flower = Process("flower", python_module("celery", "-A", "delivery.celery_app", "flower", "--address=127.0.0.1",
                                             f"--port={port}", f"--basic_auth=ops:{password}",
                                             "--enable_events=False"),
                     stack.env, log_path=stack.log_dir / "flower.log")
    stack.workers.append(flower)  # stopped with the workers
    return flower, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("events", [False, True])
def test_flower_shows_the_workers_and_with_task_events_their_tasks(redis_server, tiny_model, tmp_path, events):
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/9", "M2FP_MODEL": str(tiny_model),
           "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1", "LOCAL_STORE_DIR": str(tmp_path / "store"),
           "WORKER_TASK_EVENTS": str(events).lower()}
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    stack = Stack(env=env, log_dir=tmp_path).start_api()
    try:
        password = secrets.token_urlsafe(12)
        _, url = start_flower(stack, password)
        worker = stack.start_worker("seen")
        wait_until(lambda: " ready." in worker.log_text(), 120, "the worker to start")
        auth = ("ops", password)

        def api(path: str) -> requests.Response:
            try:
                return requests.get(f"{url}{path}", auth=auth, timeout=10)
            except requests.ConnectionError:  # Flower still starting
                return requests.Response()

        def listed() -> bool:
            answer = api("/api/workers?refresh=1")
            return answer.ok and any(name.startswith("seen@") for name in answer.json())

        wait_until(listed, 120, "Flower to list the worker", interval=0.5)
        assert requests.get(f"{url}/api/workers", timeout=10).status_code == 401  # no login, no view
        job_id = stack.submit(photo_jpeg(64, 48)).json()["id"]
        assert stack.wait_for(job_id)["status"] == "succeeded"
        if events:
            wait_until(lambda: any(job_id in str(task.get("args")) for task in api("/api/tasks").json().values()),
                       60, "Flower to show the task", interval=0.5)
        else:
            # The task ran; Flower, with no events coming, has never heard of it.
            assert api("/api/tasks").json() == {}
    finally:
        stack.stop()
