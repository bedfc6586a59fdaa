"""Same content, same job, under any interleaving: many clients post the same bytes at
the same instant, through a real gunicorn API on a real Redis.

Before the content claim and the record were written in one transaction, 24 clients
posting one photo at once made two jobs in about one round in five, and a submission
could be answered with an id whose record was then rolled back (404).
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from common.job_store import JobStore
from common.jobs import InputInfo, JobStatus, Priority, new_job_id
from common.redis_connection import redis_client
from scripts.imagegen import photo_jpeg
from scripts.stack import Stack
from tests.harness.faults import losing_the_first_commit_reply

CLIENTS = 24
ROUNDS = 20


@pytest.fixture()
def api_only(redis_server, tmp_path):
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/5", "LOCAL_STORE_DIR": str(tmp_path / "store")}
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    stack = Stack(env=env, log_dir=tmp_path).start_api()
    yield stack
    stack.stop()


def test_many_clients_posting_the_same_photo_at_once_get_one_job(api_only):
    start = threading.Barrier(CLIENTS)
    session_per_thread = threading.local()

    def post(data: bytes) -> requests.Response:
        session = getattr(session_per_thread, "session", None) or requests.Session()
        session_per_thread.session = session
        start.wait(timeout=30)
        return session.post(f"{api_only.api_url}/v1/jobs", files={"image": ("p.jpg", data, "image/jpeg")},
                            timeout=60)

    with ThreadPoolExecutor(CLIENTS) as pool:
        for round_ in range(ROUNDS):
            data = photo_jpeg(96, 64, seed=1000 + round_)
            answers = list(pool.map(post, [data] * CLIENTS))
            assert sorted({r.status_code for r in answers}) in ([200, 202], [202]), [r.text for r in answers]
            ids = {r.json()["id"] for r in answers}
            assert len(ids) == 1, f"round {round_}: {len(ids)} jobs for one photo"
            assert sum(r.status_code == 202 for r in answers) == 1  # one made it, the rest were told of it
            [job_id] = ids
            assert api_only.job(job_id)["status"] == "queued"  # no 404: nothing was rolled back


def test_concurrent_creates_for_one_content_make_one_record(job_store):
    info = InputInfo(width=3, height=2, format="JPEG", bytes=10, sha256="1" * 64)
    for round_ in range(30):
        start = threading.Barrier(8)

        def create(_):
            start.wait(timeout=10)
            return job_store.create_for_content(new_job_id(), f"content-{round_}", info, Priority.INTERACTIVE,
                                                tenant="t")

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(create, range(8)))
        assert len({job.id for job, _ in results}) == 1 and sum(created for _, created in results) == 1
        assert job_store.client.keys(job_store.prefix + "*").__len__() == round_ + 1


def test_content_whose_job_failed_or_belongs_to_another_tenant_makes_a_new_job(job_store):
    info = InputInfo(width=3, height=2, format="JPEG", bytes=10, sha256="2" * 64)
    first, created = job_store.create_for_content(new_job_id(), "c", info, Priority.INTERACTIVE, tenant="a")
    assert created
    other, created = job_store.create_for_content(new_job_id(), "c", info, Priority.INTERACTIVE, tenant="b")
    assert created and other.id != first.id  # the index is per tenant
    again, created = job_store.create_for_content(new_job_id(), "c", info, Priority.INTERACTIVE, tenant="a")
    assert not created and again.id == first.id
    job_store.request_cancel(first.id)
    fresh, created = job_store.create_for_content(new_job_id(), "c", info, Priority.INTERACTIVE, tenant="a")
    assert created and fresh.id != first.id and job_store.get(fresh.id).status is JobStatus.QUEUED


def test_a_create_whose_commit_reply_was_lost_is_the_job_it_made(redis_url):
    """Redis applied the claim and the record, the reply never came, redis-py ran the
    transaction again: the second run finds this very record and must answer with it
    (before, it raised 'already exists', and the API deleted the input of a job that
    other submissions of the same bytes had already been answered with)."""
    store = JobStore(losing_the_first_commit_reply(redis_client(redis_url)), ttl_seconds=3600)
    info = InputInfo(width=3, height=2, format="JPEG", bytes=10, sha256="3" * 64)
    job, created = store.create_for_content(new_job_id(), "c", info, Priority.INTERACTIVE, tenant="t")
    assert created and store.client.connection_pool.connection_class.armed is False  # the reply was lost once
    assert store.get(job.id) == job and store.contents.owner("t", "c") == job.id
    again, created = store.create_for_content(new_job_id(), "c", info, Priority.INTERACTIVE, tenant="t")
    assert (again.id, created) == (job.id, False)
