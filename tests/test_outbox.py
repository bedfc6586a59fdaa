"""The webhook outbox on a real Redis: several sweepers at once never take one entry twice.

Taking entries was a read followed by a separate re-dating write; two delivery
workers sweeping at the same moment could both read an entry before either re-dated
it, and send the event twice.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

from common.webhook_outbox import WebhookOutbox

SWEEPERS = 16
ENTRIES = 400


def test_concurrent_sweeps_take_each_due_entry_once(job_store):
    outbox = job_store.outbox
    for round_ in range(5):
        job_store.client.delete(outbox.key)
        job_store.client.zadd(outbox.key, {f"job{i:04d} delivery{round_}": 0 for i in range(ENTRIES)})  # long due
        start = threading.Barrier(SWEEPERS)

        def sweep(_):
            own = WebhookOutbox(job_store.client, outbox.key)
            start.wait(timeout=10)
            return own.take_unsent(older_than=60)

        with ThreadPoolExecutor(SWEEPERS) as pool:
            taken = [entry for batch in pool.map(sweep, range(SWEEPERS)) for entry in batch]
        assert len(taken) == ENTRIES and len(set(taken)) == ENTRIES, f"round {round_}: {len(taken) - len(set(taken))} taken twice"
        assert outbox.take_unsent(older_than=60) == []  # re-dated as taken: not due again yet
        assert job_store.client.zcard(outbox.key) == ENTRIES  # taking never removes: attempts do


def test_an_attempted_delivery_leaves_the_outbox(job_store):
    outbox = job_store.outbox
    job_store.client.zadd(outbox.key, {"a d1": 0, "b d2": 0})
    outbox.attempted("a", "d1")
    assert outbox.take_unsent(older_than=0) == [("b", "d2")]
