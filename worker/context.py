"""What a worker's pool process holds for its lifetime: the services, the loaded engines
(parsing, and pose for keypoints) and its heartbeat.

Set once per process at start-up (:mod:`worker.startup`), after the engine loaded;
the Celery task reads it for every job.
"""
from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from typing import Optional

from common.services import Services
from worker.engine import ParsingEngine
from worker.heartbeat import Heartbeat
from worker.pose import PoseEngine


@dataclass(frozen=True)
class WorkerProcess:
    services: Services
    engine: ParsingEngine
    heartbeat: Heartbeat
    pose: Optional[PoseEngine] = None  # finds body keypoints for the jobs that ask for them


_current: Optional[WorkerProcess] = None
_name: Optional[tuple[int, str]] = None


def set_process(process: Optional[WorkerProcess]) -> None:
    """Install this process's services and engine (at pool-process start)."""
    global _current
    _current = process


def current_process() -> WorkerProcess:
    if _current is None:
        raise RuntimeError("worker process not initialised: the model did not load at start-up")
    return _current


def process_name() -> str:
    """This model process's name among those serving the queue: host, pid and a random
    part drawn once per process, since a restarted container has the same host name
    and, often, the same pids, and must not pass for the process it replaced."""
    global _name
    if _name is None or _name[0] != os.getpid():
        _name = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}")
    return _name[1]
