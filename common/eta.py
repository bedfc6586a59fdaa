"""How long jobs take: the workers' recent per-job service times, for queued jobs' ETAs."""
from __future__ import annotations

import math
from typing import Optional

import redis
from redis.client import Pipeline


class ServiceTimes:
    """The last :data:`SAMPLES` per-job service times, newest first, in one Redis list."""

    KEY = "m2fp:service-seconds"
    SAMPLES = 50

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def record(self, seconds: float) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.lpush(self.KEY, f"{seconds:.3f}")
            pipe.ltrim(self.KEY, 0, self.SAMPLES - 1)
            pipe.execute()

    def read(self, pipe: Pipeline) -> None:
        """Queue the read on ``pipe``; :func:`per_job` turns its answer into seconds."""
        pipe.lrange(self.KEY, 0, self.SAMPLES - 1)


def per_job(samples: list[bytes]) -> Optional[float]:
    """The mean service time of the samples :meth:`ServiceTimes.read` returned."""
    seconds = [float(sample) for sample in samples]
    return sum(seconds) / len(seconds) if seconds else None


def eta_seconds(ahead: int, seconds_per_job: Optional[float], processes: int) -> Optional[float]:
    """Seconds until a worker starts a job with ``ahead`` jobs before it, when known."""
    if seconds_per_job is None or not processes:
        return None
    return round(math.ceil((ahead + 1) / processes) * seconds_per_job, 1)
