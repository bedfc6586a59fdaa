"""Which model processes serve the queue, and what each one works on right now.

Every model process beats from a background thread every ``WORKER_HEARTBEAT_SECONDS``
(worker/heartbeat.py) and says which job it runs when it takes one and when it is done.
Two readers: the ETA of queued jobs counts the processes heard from recently, and the
sweeper (worker/sweeper.py) finds ``running`` jobs whose process went silent, or is
alive but no longer runs them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import redis
from redis.client import Pipeline


@dataclass(frozen=True)
class ProcessState:
    last_seen: float  # epoch seconds of its latest beat
    job_id: Optional[str]  # the job it runs, None when idle


class ModelProcesses:
    SEEN = "m2fp:model-processes"  # sorted set: process name -> its latest beat
    WORKING = "m2fp:model-processes:job"  # hash: process name -> the job it runs

    def __init__(self, client: redis.Redis, silent_after: float) -> None:
        self.client = client
        self.silent_after = silent_after  # a process not heard from this long is gone

    def beat(self, process: str, job_id: Optional[str]) -> None:
        """The process is alive, and runs ``job_id`` (None: it is idle)."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.SEEN, {process: time.time()})
            if job_id is None:
                pipe.hdel(self.WORKING, process)
            else:
                pipe.hset(self.WORKING, process, job_id)
            pipe.execute()

    def withdraw(self, process: str) -> None:
        """The process stops (at its exit): it no longer serves the queue."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zrem(self.SEEN, process)
            pipe.hdel(self.WORKING, process)
            pipe.execute()

    def count_live(self, pipe: Pipeline) -> None:
        """Queue on ``pipe`` the count of processes heard from within ``silent_after``."""
        pipe.zcount(self.SEEN, time.time() - self.silent_after, "+inf")

    def states(self, processes: list[str]) -> dict[str, ProcessState]:
        """What each named process last said; a process never heard from is absent."""
        if not processes:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for process in processes:
                pipe.zscore(self.SEEN, process)
            pipe.hmget(self.WORKING, processes)
            *seen, jobs = pipe.execute()
        return {process: ProcessState(last_seen, job.decode() if job else None)
                for process, last_seen, job in zip(processes, seen, jobs) if last_seen is not None}

    def prune(self) -> int:
        """Forget processes silent for ten times ``silent_after`` (they exited uncleanly)."""
        gone = [name.decode() for name in
                self.client.zrangebyscore(self.SEEN, "-inf", time.time() - 10 * self.silent_after)]
        for process in gone:
            self.withdraw(process)
        return len(gone)
