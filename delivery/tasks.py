"""The webhook delivery task: thin, it maps one attempt's outcome onto Celery's retries
and notes it on the job (:meth:`common.job_store.JobStore.record_delivery`)."""
from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timezone
from typing import Optional
from urllib.parse import urlsplit

import redis
from celery.exceptions import Reject

from common.jobs import Delivery
from common.celery_factory import WEBHOOK_TASK
from common.services import Services
from common.settings import Settings
from common.webhooks import DeliveryMessage
from delivery import outbox
from delivery.celery_app import app, settings
from delivery.sender import Attempt, Sender

log = logging.getLogger(__name__)

sender = Sender(settings)
services = Services.create(settings)
outbox.start(services)


def backoff_seconds(attempts: int, settings: Settings = settings) -> float:
    """The wait after ``attempts`` failed attempts: doubling from the first wait, capped,
    with a little jitter so that many failed deliveries do not return in step."""
    wait = settings.webhook_backoff_first * 2 ** (attempts - 1) * random.uniform(0.9, 1.1)
    return min(settings.webhook_backoff_cap, wait)


@app.task(name=WEBHOOK_TASK, bind=True, max_retries=None)
def deliver(self, **fields) -> bool:
    message = DeliveryMessage.model_validate(fields)
    attempts = self.request.retries + 1
    try:
        services.jobs.outbox.attempted(message.job_id, message.delivery_id)
    except redis.RedisError:
        pass  # it stays in the outbox: at worst sent once more, under the same webhook-id
    outcome = sender.attempt(message)
    wait: Optional[float] = None
    if not outcome.delivered and outcome.retry:
        wait = backoff_seconds(attempts)
        if time.time() + wait > message.created + settings.webhook_retry_seconds:
            wait = None
    _note(message, outcome, wait, attempts)
    if wait is not None:
        try:
            raise self.retry(countdown=wait)
        except Reject:
            # Celery could not publish the retry (Redis is down) and would drop this message;
            # hand it back instead: requeued now, or redelivered after the visibility timeout.
            raise Reject(outcome.error, requeue=True) from None
    return outcome.delivered


def _note(message: DeliveryMessage, outcome: Attempt, wait: Optional[float], attempts: int) -> None:
    host = urlsplit(message.url).hostname  # never the whole URL: its query may hold a token
    verdict = ("delivered" if outcome.delivered else f"failed ({outcome.error}), retry in {wait:.1f} s"
               if wait is not None else f"failed ({outcome.error}), given up")
    log.log(logging.INFO if outcome.delivered or wait is not None else logging.WARNING,
            "webhook %s of job %s (%s) to %s, attempt %d: %s", message.delivery_id, message.job_id,
            message.event, host, attempts, verdict)
    next_at = None
    if wait is not None:
        next_at = datetime.fromtimestamp(time.time() + wait, timezone.utc).isoformat(timespec="milliseconds")
        next_at = next_at.replace("+00:00", "Z")
    try:
        services.jobs.record_delivery(message.job_id, message.delivery_id, Delivery(
            delivered=outcome.delivered, status=outcome.status, error=outcome.error, next_attempt_at=next_at))
    except redis.RedisError:  # the delivery itself went on; only its note on the job is missing
        log.warning("could not note webhook %s on job %s", message.delivery_id, message.job_id, exc_info=True)
