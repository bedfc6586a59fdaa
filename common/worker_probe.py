"""Liveness of a Celery worker, from the worker itself: ``python -m common.worker_probe worker``.

The worker's main process touches a file from its consumer's event loop every few
seconds (:class:`LivenessFile`, a Celery bootstep); the probe passes while the file is
fresh. That is the loop which takes jobs, acknowledges them and answers control
commands, so a worker wedged there (a hung broker socket, a deadlock) goes stale, while
a worker busy with a long job does not (jobs run in pool processes or threads). Unlike
``celery inspect ping`` it needs no round trip through the broker: a probe that fails
whenever Redis is away would have an orchestrator restart every worker during a Redis
failover. A consumer that is reconnecting does not tick either, so the probe's limit
(``--max-age``) and the orchestrator's failure threshold must outlast a failover; the
Kubernetes manifests (deploy/) allow five minutes.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from celery import Celery, bootsteps

# The file of each kind of worker (a machine may run both); WORKER_LIVENESS_DIR moves them.
ROLES = {"worker": "m2fp-worker.alive", "webhooks": "m2fp-webhooks.alive"}
TICK_SECONDS = 5.0
DEFAULT_MAX_AGE = 60.0


def liveness_path(role: str, directory: Optional[Path] = None) -> Path:
    return Path(directory or tempfile.gettempdir()) / ROLES[role]


class LivenessFile(bootsteps.StartStopStep):
    """Touches the role's file when the consumer starts and on every tick of its loop."""

    requires = {"celery.worker.consumer.tasks:Tasks"}
    path: Path  # set by install_liveness_file

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref = None

    def start(self, consumer: Any) -> None:
        self.touch()
        self.timer_ref = consumer.timer.call_repeatedly(TICK_SECONDS, self.touch)

    def stop(self, consumer: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def shutdown(self, consumer: Any) -> None:
        """The worker stops for good (not a reconnect, which only stops and starts): a
        stopped worker fails the probe at once instead of ``--max-age`` later."""
        self.stop(consumer)
        self.path.unlink(missing_ok=True)

    def touch(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()


def install_liveness_file(app: Celery, role: str, directory: Optional[Path] = None) -> Path:
    """Add the bootstep to ``app``'s consumer; return the file it keeps fresh."""
    path = liveness_path(role, directory)
    app.steps["consumer"].add(type("LivenessFile", (LivenessFile,), {"path": path}))
    return path


def check(path: Path, max_age: float) -> Optional[str]:
    """None when ``path`` was touched within ``max_age`` seconds, else why not."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"{path} does not exist: the worker's consumer has not started (still loading the model?)"
    if age > max_age:
        return (f"{path} is {age:.0f} s old (limit {max_age:g} s): the worker's event loop has stopped ticking "
                "(wedged, or reconnecting to Redis all that time); its log says which")
    return None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.worker_probe", description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=sorted(ROLES), help="which worker of this container or pod")
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE,
                        help=f"seconds the file may be old (default {DEFAULT_MAX_AGE:g})")
    args = parser.parse_args(argv)
    from common.settings import load_settings  # WORKER_LIVENESS_DIR, as the worker read it

    problem = check(liveness_path(args.role, load_settings().worker_liveness_dir), args.max_age)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
