"""The webhook outbox: deliveries begun but not yet attempted by a delivery worker.

A lifecycle step that begins a webhook delivery adds its entry in the same
transaction as the record's change (:meth:`WebhookOutbox.add` on the step's
pipeline); the delivery worker removes it when its attempt begins. Entries left
behind (the message never left: the process died, Redis blinked) are taken by the
outbox sweep (``delivery/outbox.py``) and sent again.
"""
from __future__ import annotations

import time

import redis
from redis.client import Pipeline

# Read the entries due and re-date them in one step: two sweepers running at once
# cannot both take one entry (a read then a separate write let both send it).
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, entry in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], entry)
end
return due
"""


def _entry(job_id: str, delivery_id: str) -> str:
    return f"{job_id} {delivery_id}"


class WebhookOutbox:
    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key
        self._take_due = client.register_script(_TAKE_DUE)

    def add(self, pipe: Pipeline, job_id: str, delivery_id: str) -> None:
        """Queue the entry on ``pipe``: written with the step that began the delivery."""
        pipe.zadd(self.key, {_entry(job_id, delivery_id): time.time()})

    def attempted(self, job_id: str, delivery_id: str) -> None:
        """The delivery reached its worker: it leaves the outbox."""
        self.client.zrem(self.key, _entry(job_id, delivery_id))

    def take_unsent(self, older_than: float) -> list[tuple[str, str]]:
        """``(job id, delivery id)`` of deliveries begun over ``older_than`` seconds ago
        that no delivery worker has attempted; each is re-dated as it is taken, so the
        next look (by any sweeper) finds it only after another ``older_than``."""
        now = time.time()
        entries = self._take_due(keys=[self.key], args=[now - older_than, now])
        return [tuple(entry.decode().split(" ", 1)) for entry in entries]
