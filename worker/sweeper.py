"""The stranded-job sweep: jobs nothing works on any more are handed on.

Two kinds of job would otherwise wait until their record expires:

- ``running`` jobs whose model process stopped heartbeating (killed, out of memory,
  its container or host gone), or is alive but no longer runs them (its failure could
  not be recorded). Their message may be acknowledged already, or held in Redis's
  unacked set for a whole visibility timeout. The sweep queues them again through
  :meth:`~common.job_store.JobStore.recover` (``failed`` with ``worker_lost`` once they
  were lost ``MAX_ATTEMPTS`` times) and sends a new message.
- ``queued`` jobs with no message in Redis at all (the API's send failed after the
  record was written, or a message was lost with a Redis that restarted without its
  data). The sweep sends one.

A message the sweep sends in a race (the old one turned up after all) is harmless: a
worker drops a message for a job that runs under another message or has ended.
Every model worker's main process runs the sweep. Two keys in Redis keep it to one
sweep per ``SWEEP_INTERVAL_SECONDS`` across the fleet (``DUE``), and one at a time
(``SWEEPING``, held while a sweep runs, so a slow sweep is never joined by the next;
it expires after a few intervals, at least ``SWEEP_LOCK_SECONDS``, should its holder
die mid-sweep, so the fleet's sweeps never pause for long).
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import redis
from redis.exceptions import LockError

from common import periodic
from common.jobs import Job, JobError, JobStatus
from common.services import Services
from m2fp_contract.errors import ErrorCode
from worker import metrics

log = logging.getLogger(__name__)

DUE = "m2fp:sweeper"
SWEEPING = "m2fp:sweeper:running"
SWEEP_LOCK_SECONDS = 60  # far above a sweep's seconds, even over a large backlog
REQUEUED = JobError.of(ErrorCode.WORKER_LOST, "the worker running this job stopped before it finished (killed, "
                                              "out of memory, or its host went away); the job was queued again")


@dataclass(frozen=True)
class Sweep:
    """What one sweep did."""

    requeued: list[str]
    failed: list[str]
    resent: list[str]


class Sweeper:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self._token = secrets.token_hex(8)

    def sweep_if_due(self) -> "Sweep | None":
        """Sweep unless another sweeper did within ``SWEEP_INTERVAL_SECONDS`` or still does."""
        client = self.services.redis
        if not client.set(DUE, self._token, nx=True, px=int(self.settings.sweep_interval_seconds * 1000)):
            return None
        hold = max(SWEEP_LOCK_SECONDS, 3 * self.settings.sweep_interval_seconds)
        sweeping = client.lock(SWEEPING, timeout=hold, blocking=False)
        if not sweeping.acquire():
            log.info("the previous stranded-job sweep still runs; skipping this one")
            return None
        try:
            return self.sweep()
        finally:
            try:
                sweeping.release()
            except LockError:  # it expired: the next sweeper could start meanwhile
                log.warning("the stranded-job sweep took over %.0f s; its lock had expired", hold)
            except redis.RedisError:  # it expires on its own
                log.warning("could not release the stranded-job sweep's lock; it expires in %.0f s", hold,
                            exc_info=True)

    def sweep(self) -> Sweep:
        cutoff = time.time() - self.settings.stranded_after_seconds
        requeued, failed = self._recover_running(cutoff)
        resent = self._resend_queued(cutoff)
        self.services.queue.processes.prune()
        return Sweep(requeued, failed, resent)

    def _recover_running(self, cutoff: float) -> tuple[list[str], list[str]]:
        jobs, processes = self.services.jobs, self.services.queue.processes
        ids = jobs.in_state_since(JobStatus.RUNNING, cutoff)
        records = jobs.get_many(ids)
        states = processes.states(sorted({job.process for job in records if job and job.process}))
        requeued, failed = [], []
        for job_id, job in zip(ids, records):
            if job is None:
                jobs.forget(job_id)
                continue
            state = states.get(job.process) if job.process else None
            if job.status is not JobStatus.RUNNING or (state and state.last_seen >= cutoff and state.job_id == job.id):
                continue  # moved on since the index was read, or its process is alive and on it
            lost_error = JobError.of(ErrorCode.WORKER_LOST, f"the worker running this job stopped before it "
                                     f"finished, {job.lost + 1} times (killed, out of memory, or its host went "
                                     "away); it will not be tried again")
            recovered = jobs.recover(job.id, job, REQUEUED, lost_error, self.settings.max_attempts)
            if recovered is None:
                continue
            why = "went silent" if state is None or state.last_seen < cutoff else "no longer runs it"
            if recovered.status is JobStatus.QUEUED:
                self._send(recovered)
                requeued.append(job.id)
                metrics.count_job("recovered", ErrorCode.WORKER_LOST)
                log.warning("job %s: its process %s %s; queued it again (lost %d times)", job.id, job.process, why,
                            recovered.lost)
            else:
                failed.append(job.id)
                metrics.count_job("failed", ErrorCode.WORKER_LOST)
                log.error("job %s: its process %s %s; failed it (worker_lost, lost %d times)", job.id, job.process,
                          why, recovered.lost)
        return requeued, failed

    def _resend_queued(self, cutoff: float) -> list[str]:
        jobs = self.services.jobs
        ids = jobs.in_state_since(JobStatus.QUEUED, cutoff)
        if not ids:
            return []
        with_messages = self.services.queue.jobs_with_messages()
        missing = [job_id for job_id in ids if job_id not in with_messages]
        resent = []
        for job_id, job in zip(missing, jobs.get_many(missing)):
            if job is None:
                jobs.forget(job_id)
            elif job.status is JobStatus.QUEUED:
                self._send(job)
                resent.append(job_id)
                metrics.count_job("resent")
                log.warning("job %s was queued without a message in Redis; sent it again", job_id)
        return resent

    def _send(self, job: Job) -> None:
        self.services.queue.enqueue(job.id, job.priority)


def start(services: Services) -> None:
    """Sweep from this worker's main process while it runs (common.periodic)."""
    sweeper = Sweeper(services)
    periodic.every(services.settings.sweep_interval_seconds, "stranded-job sweep", sweeper.sweep_if_due)
