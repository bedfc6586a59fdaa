"""Job records in Redis, one hash per job, changed only by the lifecycle steps of
:class:`JobStore` (the state machine is drawn in :mod:`common.jobs`).

A job with a webhook that arrives at one of the webhook's events (a status) begins
that event's delivery in the same write, and the store's ``on_event`` hook then sends
it (:mod:`common.webhooks`); every step thus notifies, and none can forget to. The same
write puts the delivery in the outbox (:mod:`common.webhook_outbox`).

Every step also keeps the status index: the ids of ``queued`` and ``running`` jobs, each
with the time it entered that state, written in the same transaction as the record.
The sweeper (``worker/sweeper.py``) reads it to find jobs nothing works on any more.
Records expire ``job_ttl_seconds`` after their last change.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import redis
from redis.client import Pipeline

from common.content_index import ContentIndex
from common.jobs import (DEFAULT_TENANT, REUSABLE_STATUSES, Delivery, InputInfo, InvalidTransition, Job, JobError,
                         JobResult, JobStatus, OutputOptions, Priority, RunsUnderAnotherMessage, SourceRef, Webhook, check_transition, may_move,
                         utcnow)
from common.webhook_outbox import WebhookOutbox
from m2fp_contract.schema import WebhookEvent

log = logging.getLogger(__name__)

# What a lifecycle step writes, given the record as it is: the fields to change, or
# None to leave the record alone.
_Change = Callable[[Job], Optional[dict[str, Any]]]
# The states the status index follows: those a job can be stuck in.
INDEXED = (JobStatus.QUEUED, JobStatus.RUNNING)


def _webhook_event(job: Job, status: Optional[JobStatus]) -> Optional[WebhookEvent]:
    """The event a move to ``status`` is for the job's webhook, if it asked for it."""
    if status is None or status == job.status or job.webhook is None:
        return None
    event = WebhookEvent(status.value) if status.value in WebhookEvent._value2member_map_ else None
    return event if event in job.webhook.events else None


class JobStore:
    """The lifecycle steps, one method each, every one a single Redis transaction.

    ``on_event`` is called with the job after a step began a webhook delivery; its
    failure is logged, never raised: the step already happened.
    """

    def __init__(self, client: redis.Redis, ttl_seconds: int, prefix: str = "m2fp:job:",
                 on_event: Optional[Callable[[Job], None]] = None) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self.prefix = prefix
        self.contents = ContentIndex(client, prefix.replace(":job:", ":content:"), ttl_seconds)
        self.outbox = WebhookOutbox(client, prefix.replace(":job:", ":webhook-outbox"))
        self._index = {status: prefix.replace(":job:", f":jobs:{status.value}") for status in INDEXED}
        self.on_event = on_event

    def _key(self, job_id: str) -> str:
        return self.prefix + job_id

    # ---- reading -------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[Job]:
        values = self.client.hgetall(self._key(job_id))
        return Job.from_redis(values) if values else None

    def cancel_pending(self, job_id: str) -> bool:
        """Whether a cancel waits for this running job's next safe point (one field read)."""
        return self.client.hget(self._key(job_id), "cancel_requested") == b"true"

    def get_many(self, job_ids: list[str]) -> list[Optional[Job]]:
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self._key(job_id))
            return [Job.from_redis(values) if values else None for values in pipe.execute()]

    def job_for_content(self, tenant: str, content: str) -> Optional[Job]:
        """The tenant's job that answers for this content (queued, running or succeeded),
        or None: then the content may be submitted anew."""
        job_id = self.contents.owner(tenant, content)
        job = self.get(job_id) if job_id else None
        return job if job and job.tenant == tenant and job.status in REUSABLE_STATUSES else None

    def in_state_since(self, status: JobStatus, before: float) -> list[str]:
        """Ids of jobs that entered ``status`` (queued or running) before ``before`` (epoch
        seconds) and are still in it, as far as the status index knows."""
        return [job_id.decode() for job_id in self.client.zrangebyscore(self._index[status], "-inf", before)]

    def forget(self, job_id: str) -> None:
        """Drop an expired record's status index entries (the record itself is gone)."""
        with self.client.pipeline(transaction=False) as pipe:
            for key in self._index.values():
                pipe.zrem(key, job_id)
            pipe.execute()

    # ---- the lifecycle ---------------------------------------------------------------

    def _new(self, job_id: str, input_info: InputInfo, priority: Priority, source: Optional[SourceRef],
             tenant: str, webhook: Optional[Webhook], output: Optional[OutputOptions]) -> Job:
        now = utcnow()
        return Job(id=job_id, tenant=tenant, status=JobStatus.QUEUED, created_at=now, updated_at=now,
                   input=input_info, priority=priority, source=source, webhook=webhook,
                   output=output or OutputOptions())

    def create(self, job_id: str, input_info: InputInfo, priority: Priority,
               source: Optional[SourceRef] = None, tenant: str = DEFAULT_TENANT,
               webhook: Optional[Webhook] = None, output: Optional[OutputOptions] = None) -> Job:
        """A new ``queued`` job (its input is already stored, its message not yet sent).
        :class:`InvalidTransition` if a record with this id exists: it is never overwritten."""
        return self._create(self._new(job_id, input_info, priority, source, tenant, webhook, output), None)[0]

    def create_for_content(self, job_id: str, content: str, input_info: InputInfo, priority: Priority,
                           source: Optional[SourceRef] = None, tenant: str = DEFAULT_TENANT,
                           webhook: Optional[Webhook] = None,
                           output: Optional[OutputOptions] = None) -> tuple[Job, bool]:
        """``(the new job, True)``, its record and its content claim written together; or
        ``(the tenant's job that already answers for this content, False)``, and nothing
        written. One transaction, so two submissions of the same bytes at the same
        instant make one job whatever the interleaving."""
        job = self._new(job_id, input_info, priority, source, tenant, webhook, output)
        return self._create(job, content)

    def _create(self, job: Job, content: Optional[str]) -> tuple[Job, bool]:
        key = self._key(job.id)
        claim = self.contents.key(job.tenant, content) if content is not None else None

        def transaction(pipe: Pipeline) -> tuple[Job, bool]:
            values = pipe.hgetall(key)
            if values:
                mine = Job.from_redis(values)
                if (mine.created_at, mine.input, mine.tenant) == (job.created_at, job.input, job.tenant):
                    # This very write, committed before the connection dropped: redis-py
                    # then runs the transaction again. Others may have been answered with it.
                    return mine, True
                raise InvalidTransition(f"job {job.id} already exists")
            if claim is not None:
                owner = pipe.get(claim)
                if owner is not None:
                    owner_key = self._key(owner.decode())
                    pipe.watch(owner_key)  # a change of the owner (it failed, say) retries this
                    values = pipe.hgetall(owner_key)
                    existing = Job.from_redis(values) if values else None
                    if existing and existing.tenant == job.tenant and existing.status in REUSABLE_STATUSES:
                        return existing, False
            pipe.multi()
            pipe.hset(key, mapping=job.to_redis())
            pipe.expire(key, self.ttl)
            pipe.zadd(self._index[JobStatus.QUEUED], {job.id: time.time()})
            if claim is not None:
                pipe.set(claim, job.id, ex=self.ttl)
            return job, True

        watched = [key] if claim is None else [key, claim]
        return self.client.transaction(transaction, *watched, value_from_callable=True)

    def start(self, job_id: str, worker: Optional[str], message_id: Optional[str],
              process: Optional[str] = None) -> Job:
        """A worker takes the job: ``queued`` (or ``running`` under this same message,
        redelivered because the worker that had it died, which counts as lost) ->
        ``running``. :class:`RunsUnderAnotherMessage` if another message started it: the
        check and the write are one transaction, so of two messages read at the same
        instant exactly one runs the job."""
        def take(job: Job) -> dict[str, Any]:
            if job.status is JobStatus.RUNNING and message_id and job.message_id not in (None, message_id):
                raise RunsUnderAnotherMessage(f"job {job_id} runs under message {job.message_id}")
            return {"started_at": utcnow(), "attempts": job.attempts + 1,
                    "lost": job.lost + (job.status is JobStatus.RUNNING), "last_error": None,
                    "worker": worker, "message_id": message_id, "process": process}

        return self._step(job_id, JobStatus.RUNNING, take)

    def requeue(self, job_id: str, error: JobError) -> Job:
        """``running`` -> ``queued``: a transient fault; its message comes back for a retry."""
        return self._step(job_id, JobStatus.QUEUED, lambda job: {"last_error": error})

    def recover(self, job_id: str, judged: Job, requeued: JobError, failed: JobError,
                max_lost: int) -> Optional[Job]:
        """``running`` -> ``queued`` (or ``failed`` once it was lost ``max_lost`` times): the
        process that ran it stopped working on it without saying so (the sweeper found
        it). Only the run the sweeper judged, the record ``judged`` it read: a job that
        moved on meanwhile (it finished, or started again elsewhere) is left alone, and
        None is returned. A run is its start's time and count together: two starts in
        one millisecond share the time, never the count."""
        def recovered(job: Job) -> Optional[dict[str, Any]]:
            if job.status is not JobStatus.RUNNING or (job.started_at, job.attempts) != (judged.started_at,
                                                                                          judged.attempts):
                return None
            lost = job.lost + 1
            if lost >= max_lost:
                return {"status": JobStatus.FAILED, "lost": lost, "finished_at": utcnow(), "error": failed}
            return {"status": JobStatus.QUEUED, "lost": lost, "last_error": requeued}

        try:
            job, changed = self._apply(job_id, None, recovered)
        except KeyError:
            return None
        return job if changed else None

    def succeed(self, job_id: str, result: JobResult) -> Job:
        """``running`` -> ``succeeded``, with the stored outputs; ``canceled`` instead
        (outputs unpublished) when a cancel arrived while they were being stored."""
        return self._step_unless_canceled(job_id, JobStatus.SUCCEEDED, lambda job: {
            "finished_at": utcnow(), "result": result})

    def request_cancel(self, job_id: str) -> Job:
        """A client withdraws the job: ``queued`` -> ``canceled`` at once; a running job is
        marked, and its worker stops it at the next safe point (:meth:`stop`).
        :class:`InvalidTransition` for a job that already ended."""
        def cancel(job: Job) -> Optional[dict[str, Any]]:
            if not may_move(job.status, JobStatus.CANCELED):  # now, or at the running job's safe point
                raise InvalidTransition(f"job {job_id} is {job.status.value}")
            if job.status is JobStatus.QUEUED:
                return {"status": JobStatus.CANCELED, "finished_at": utcnow(), "last_error": None}
            return {"cancel_requested": True}

        return self._apply(job_id, None, cancel)[0]

    def stop(self, job_id: str) -> Job:
        """``running`` -> ``canceled``: its worker reached a safe point after a cancel."""
        return self._step(job_id, JobStatus.CANCELED, lambda job: {"finished_at": utcnow()})

    def fail(self, job_id: str, error: JobError) -> Job:
        """``queued`` or ``running`` -> ``failed``, for good."""
        return self._step(job_id, JobStatus.FAILED, lambda job: {"finished_at": utcnow(), "error": error})

    def promote(self, job_id: str) -> Optional[Job]:
        """Give a waiting job interactive priority; None unless it was still waiting at a
        lower one (a worker took it meanwhile, or it already had it)."""
        def raise_priority(job: Job) -> Optional[dict[str, Any]]:
            if job.status is not JobStatus.QUEUED or job.priority is Priority.INTERACTIVE:
                return None
            return {"priority": Priority.INTERACTIVE}

        try:
            job, changed = self._apply(job_id, None, raise_priority)
        except KeyError:
            return None
        return job if changed else None

    def subscribe(self, job_id: str, webhook: Webhook) -> Job:
        """Give a job that has none the webhook of a later submission of the same content;
        a job that already has one, or already ended, keeps what it has."""
        def attach(job: Job) -> Optional[dict[str, Any]]:
            return None if job.webhook or job.status.terminal else {"webhook": webhook}

        return self._apply(job_id, None, attach)[0]

    def record_delivery(self, job_id: str, delivery_id: str, delivery: Delivery) -> Optional[Job]:
        """Note an attempt at delivering the job's latest event; an attempt at an earlier
        event (its job moved on meanwhile) leaves the record alone. None if it expired."""
        def note(job: Job) -> Optional[dict[str, Any]]:
            if job.webhook is None or job.webhook.delivery_id != delivery_id:
                return None
            if job.webhook.delivered and not delivery.delivered:
                return None  # a late duplicate attempt: the delivery already happened
            return {"webhook": job.webhook.attempted(delivery)}

        try:
            return self._apply(job_id, None, note)[0]
        except KeyError:
            return None

    def _step_unless_canceled(self, job_id: str, to: JobStatus, change: _Change) -> Job:
        """Like :meth:`_step`, but a job marked for cancel ends ``canceled`` instead."""
        def step(job: Job) -> Optional[dict[str, Any]]:
            if job.cancel_requested and job.status is JobStatus.RUNNING:
                return {"status": JobStatus.CANCELED, "finished_at": utcnow()}
            return {"status": to, **(change(job) or {})}

        return self._apply(job_id, to, step)[0]

    def _step(self, job_id: str, to: JobStatus, change: _Change) -> Job:
        """Move the job to ``to`` writing ``change``'s fields, atomically.

        Raises :class:`KeyError` for an unknown job and :class:`InvalidTransition`
        when the state machine forbids the move.
        """
        return self._apply(job_id, to, change)[0]

    def _apply(self, job_id: str, to: Optional[JobStatus], change: _Change) -> tuple[Job, bool]:
        """Read, check, write only the changed fields: one Redis transaction, retried
        from the read when another client changed the record in between. Every status
        it writes is checked against :data:`TRANSITIONS`: ``to`` before ``change`` runs,
        and whatever status ``change`` itself writes (a cancel that wins over ``to``)."""
        key = self._key(job_id)
        began: list[bool] = []

        def transaction(pipe: Pipeline) -> tuple[Job, bool]:
            began.clear()
            values = pipe.hgetall(key)
            if not values:
                raise KeyError(job_id)
            job = Job.from_redis(values)
            if to is not None:
                check_transition(job, to)
            fields = change(job)
            if fields is None:
                return job, False
            fields = {**({"status": to} if to is not None else {}), **fields, "updated_at": utcnow()}
            if "status" in fields:
                check_transition(job, JobStatus(fields["status"]))
            event = _webhook_event(job, fields.get("status"))
            if event is not None:
                fields["webhook"] = job.webhook.begin(event)
                began.append(True)
            updated = Job.model_validate({**job.model_dump(), **fields})
            pipe.multi()
            pipe.hset(key, mapping=updated.to_redis(set(fields)))
            pipe.expire(key, self.ttl)
            if "status" in fields:
                self._reindex(pipe, job_id, job.status, updated.status)
            if began:
                self.outbox.add(pipe, job_id, updated.webhook.delivery_id)
            return updated, True

        updated, changed = self.client.transaction(transaction, key, value_from_callable=True)
        if began and self.on_event is not None:
            try:
                self.on_event(updated)
            except Exception:  # the step happened; a lost notice must not undo or fail it
                log.exception("job %s: could not send its %s webhook", job_id, updated.webhook.event.value)
        return updated, changed

    def _reindex(self, pipe: Pipeline, job_id: str, old: JobStatus, new: JobStatus) -> None:
        """The status index follows the record, in the step's own transaction."""
        if old in self._index and old is not new:
            pipe.zrem(self._index[old], job_id)
        if new in self._index:
            pipe.zadd(self._index[new], {job_id: time.time()})

