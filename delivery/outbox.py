"""The outbox sweep: deliveries whose message never reached a delivery worker are sent
again (:meth:`common.webhooks.WebhookNotifier.resend_unsent`).

Each delivery worker sweeps from a background thread of its main process, every fifth
of ``WEBHOOK_RESEND_AFTER``; several workers sweeping at once cannot send one delivery
twice, since taking an entry re-dates it in the same atomic step
(:meth:`common.webhook_outbox.WebhookOutbox.take_unsent`).
"""
from __future__ import annotations

from common import periodic
from common.services import Services


def start(services: Services) -> None:
    resend_after = services.settings.webhook_resend_after
    periodic.every(resend_after / 5, "webhook outbox sweep",
                   lambda: services.webhooks.resend_unsent(services.jobs, resend_after))
