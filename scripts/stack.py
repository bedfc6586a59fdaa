"""A running system for tests and benchmarks: the API under gunicorn and Celery workers,
as separate processes started with the same commands as ``make run`` and compose."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import requests

from m2fp_contract.schema import TERMINAL_STATUSES
from scripts.processes import (WORKER_APP, Process, RedisServer, api_command, delivery_command, free_port,
                               wait_until, worker_command)


@dataclass
class Stack:
    env: dict[str, str]
    log_dir: Path
    api: Process | None = None
    api_url: str = ""
    workers: list[Process] = field(default_factory=list)
    worker_app: str = WORKER_APP  # the Celery app module workers start with

    def start_api(self, port: Optional[int] = None, *, bind: str = "127.0.0.1", reach: Optional[str] = None,
                  prefix: Sequence[str] = ()) -> "Stack":
        """The API on ``bind``, reached at ``reach`` (default: ``bind``); run under
        ``prefix`` (e.g. ``ip netns exec <host>``), if given."""
        port = port or free_port()
        self.api_url = f"http://{reach or bind}:{port}"
        self.api = Process("api", [*prefix, *api_command(port, bind)], self.env, log_path=self.log_dir / "api.log")

        def healthy() -> bool:
            if not self.api.alive():
                raise RuntimeError(f"API exited:\n{self.api.log_text()}")
            try:
                return requests.get(f"{self.api_url}/healthz", timeout=1).ok
            except requests.RequestException:  # not listening yet, or still booting
                return False

        try:
            wait_until(healthy, 60, "the API to answer /healthz")
        except BaseException:
            self.api.stop(5)  # never leave a half-started server behind
            raise
        return self

    def start_worker(self, name: str = "w1", prefix: Sequence[str] = (), **env: str) -> Process:
        """A worker, run under ``prefix`` if given; with no metrics endpoint unless
        ``WORKER_METRICS_PORT`` is passed (several workers on one machine cannot share
        the default port)."""
        env = {"WORKER_CONCURRENCY": "1", "WORKER_METRICS_PORT": "0", **env}
        worker = Process(name, [*prefix, *worker_command(name=f"{name}@%h", app=self.worker_app)],
                         {**self.env, **env}, log_path=self.log_dir / f"{name}.log")
        self.workers.append(worker)
        return worker

    def start_delivery(self, name: str = "webhooks", **env: str) -> Process:
        """A webhook delivery worker (it joins ``workers``: stopped with them)."""
        delivery = Process(name, delivery_command(f"{name}@%h"), {**self.env, **env},
                           log_path=self.log_dir / f"{name}.log")
        self.workers.append(delivery)
        return delivery

    def submit(self, data: bytes, filename: str = "photo.jpg") -> requests.Response:
        return requests.post(f"{self.api_url}/v1/jobs", files={"image": (filename, data, "image/jpeg")}, timeout=30)

    def job(self, job_id: str) -> dict:
        response = requests.get(f"{self.api_url}/v1/jobs/{job_id}", timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_for(self, job_id: str, statuses: Iterable[str] = TERMINAL_STATUSES, timeout: float = 180) -> dict:
        wanted = set(statuses)
        seen: dict = {}

        def reached() -> bool:
            job = self.job(job_id)
            seen.clear()
            seen.update(job)  # the latest answer only: fields come and go with the status
            return seen["status"] in wanted

        try:
            wait_until(reached, timeout, f"job {job_id} to become {'/'.join(sorted(wanted))}", interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; last seen {seen}\n{self.logs()}") from None
        return seen

    def process_env(self) -> dict[str, str]:
        """This process's environment plus the system's settings, for client subprocesses."""
        return {**os.environ, **self.env}

    def logs(self) -> str:
        parts = [f"--- {p.name} log ---\n{p.log_text()[-4000:]}" for p in [self.api, *self.workers] if p]
        return "\n".join(parts)

    def stop(self) -> None:
        for process in [*self.workers, self.api]:
            if process:
                process.stop(20)


@contextmanager
def local_system(base: Path, **env: str) -> Iterator[Stack]:
    """A throwaway system under ``base``: its own Redis, local store and API (no
    workers yet); everything is stopped on exit."""
    redis = RedisServer(base / "redis").start()
    stack = Stack(env={"REDIS_URL": redis.url, "LOCAL_STORE_DIR": str(base / "store"), **env}, log_dir=base)
    try:
        yield stack.start_api()
    finally:
        stack.stop()
        redis.stop()
