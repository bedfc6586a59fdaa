"""The outbox sweep: deliveries whose message never reached a delivery worker are sent
again (:meth:`common.webhooks.WebhookNotifier.resend_unsent`).

Each delivery worker sweeps from a background thread of its main process, every fifth
of ``WEBHOOK_RESEND_AFTER``; several workers sweeping at once cannot send one delivery
twice in the same round, since taking an entry re-dates it first.
"""
from __future__ import annotations

import logging
import threading

import redis
from celery.signals import worker_ready, worker_shutdown

from common.services import Services

log = logging.getLogger(__name__)
_stop = threading.Event()


def sweep_forever(services: Services, stop: threading.Event) -> None:
    interval = services.settings.webhook_resend_after / 5
    while not stop.wait(interval):
        try:
            services.webhooks.resend_unsent(services.jobs, services.settings.webhook_resend_after)
        except redis.RedisError:
            log.warning("webhook outbox sweep failed; next try in %.0f s", interval, exc_info=True)


def start(services: Services) -> None:
    @worker_ready.connect(weak=False)
    def _begin(**_kwargs) -> None:
        threading.Thread(target=sweep_forever, args=(services, _stop), name="webhook-outbox", daemon=True).start()

    @worker_shutdown.connect(weak=False)
    def _end(**_kwargs) -> None:
        _stop.set()
