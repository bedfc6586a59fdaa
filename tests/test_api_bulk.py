"""What bulk clients rely on: dedupe by content, submission by reference, batches,
polling many, and backpressure on the backfill queue (real Redis, real S3 endpoint)."""
import io

import pytest

import dataclasses

from api.app import create_app
from common.jobs import JobError, JobStatus, Priority
from common.job_store import JobStore
from common.services import Services
from common.settings import Settings
from scripts.imagegen import photo_jpeg
from tests.conftest import S3_KEYS
from tests.harness.queues import RecordingQueue


@pytest.fixture()
def enqueued():
    return []


@pytest.fixture()
def s3_app(settings, s3_endpoint, s3_store, enqueued):
    settings = Settings(**{**settings.model_dump(), "s3_endpoint": s3_endpoint, "s3_bucket": s3_store.bucket,
                           "s3_access_key": S3_KEYS["access_key"], "s3_secret_key": S3_KEYS["secret_key"],
                           "storage_backend": "s3", "source_buckets": "archive-bucket, other",
                           "backfill_max_queued": 3})
    services = Services.create(settings)
    recording = RecordingQueue(services.queue, lambda job_id, priority: enqueued.append((job_id, priority)))
    return create_app(services=dataclasses.replace(services, storage=s3_store, queue=recording))


@pytest.fixture()
def client(s3_app):
    return s3_app.test_client()


def upload(client, data, **form):
    return client.post("/v1/jobs", data={"image": (io.BytesIO(data), "a.jpg"), **form},
                       content_type="multipart/form-data")


def test_same_content_twice_is_one_job(client, enqueued):
    data = photo_jpeg(64, 48, seed=1)
    first, second = upload(client, data), upload(client, data)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json["id"] == second.json["id"]
    assert (first.json["deduplicated"], second.json["deduplicated"]) == (False, True)
    assert len(enqueued) == 1
    assert upload(client, photo_jpeg(64, 48, seed=2)).json["id"] != first.json["id"]


def test_interactive_upload_of_content_waiting_as_backfill_moves_it_once(client, s3_app, enqueued):
    data = photo_jpeg(64, 48, seed=9)
    job_id = upload(client, data, priority="backfill").json["id"]
    moved = upload(client, data)
    assert moved.status_code == 200 and moved.json["id"] == job_id and moved.json["priority"] == "interactive"
    upload(client, data)  # already interactive: nothing more to send
    assert enqueued == [(job_id, "backfill"), (job_id, "interactive")]
    s3_app.extensions["m2fp"].jobs.start(job_id, worker="w", message_id="m")
    other = upload(client, photo_jpeg(64, 48, seed=10), priority="backfill").json["id"]
    s3_app.extensions["m2fp"].jobs.start(other, worker="w", message_id="m")
    assert upload(client, photo_jpeg(64, 48, seed=10)).json["priority"] == "backfill"  # too late: it runs
    assert len(enqueued) == 3


def test_content_of_a_failed_job_can_be_submitted_again(client, s3_app, enqueued):
    data = photo_jpeg(64, 48, seed=3)
    job_id = upload(client, data).json["id"]
    s3_app.extensions["m2fp"].jobs.fail(job_id, JobError(code="x", message="y"))
    again = upload(client, data)
    assert again.status_code == 202 and again.json["id"] != job_id


def test_reference_submission_reads_in_place(client, s3_store, enqueued):
    s3_store.put("archive/2024/a.jpg", photo_jpeg(80, 60, seed=4), "image/jpeg")
    response = client.post("/v1/jobs", json={"source": f"s3://{s3_store.bucket}/archive/2024/a.jpg",
                                             "priority": "backfill"})
    assert response.status_code == 202, response.json
    job = response.json
    assert job["input"]["source"] == f"s3://{s3_store.bucket}/archive/2024/a.jpg" and job["priority"] == "backfill"
    assert enqueued == [(job["id"], "backfill")]
    assert list(s3_store.iter_keys("jobs/")) == []  # nothing was copied


def test_a_referenced_object_above_the_upload_limit_is_refused_unread(client, s3_app, s3_store, enqueued):
    limit = s3_app.extensions["m2fp"].settings.max_upload_bytes
    data = photo_jpeg(64, 48, seed=5)
    s3_store.put("archive/huge.jpg", data + b"\0" * (limit + 1 - len(data)), "image/jpeg")
    response = client.post("/v1/jobs", json={"source": f"s3://{s3_store.bucket}/archive/huge.jpg"})
    assert response.status_code == 413 and response.json["error"]["code"] == "payload_too_large"
    assert enqueued == []


@pytest.mark.parametrize("source, status, code", [
    ("s3://not-configured/a.jpg", 403, "source_forbidden"),
    ({"bucket": "archive-bucket"}, 400, "invalid_source"),
    ("http://example.org/a.jpg", 400, "invalid_source"),
    ("s3://{own}/jobs/AAAAAAAAAAAAAAAAAAAAAA/input", 403, "source_forbidden"),
    # The same object to S3 servers, which drop a leading slash and collapse "//".
    ({"bucket": "{own}", "key": "/jobs/AAAAAAAAAAAAAAAAAAAAAA/input"}, 403, "source_forbidden"),
    ({"bucket": "{own}", "key": "jobs//AAAAAAAAAAAAAAAAAAAAAA/input"}, 403, "source_forbidden"),
    ("s3://{own}/archive/missing.jpg", 404, "source_not_found"),
    ("s3://{own}/archive/../a.jpg", 400, "invalid_source"),
    ({"bucket": "{own}", "key": "./a.jpg"}, 400, "invalid_source"),
    ({"bucket": "{own}", "key": " "}, 400, "invalid_source"),
])
def test_bad_references_are_refused(client, s3_store, source, status, code):
    if isinstance(source, str):
        source = source.replace("{own}", s3_store.bucket)
    elif source.get("bucket") == "{own}":
        source = {**source, "bucket": s3_store.bucket}
    response = client.post("/v1/jobs", json={"source": source})
    assert response.status_code == status and response.json["error"]["code"] == code
    sdk_refused = code == "invalid_source" and ("/../" in str(source) or isinstance(source, dict) and "key" in source)
    if sdk_refused:  # the S3 SDK's own check of the name, its words kept for the log
        assert response.json["error"]["message"].endswith(
            "is not an object name S3 can read (no blank name, no '.' or '..' segments)"), response.json


def test_json_batch_answers_each_item(client, s3_store, enqueued):
    s3_store.put("archive/ok.jpg", photo_jpeg(50, 40, seed=5), "image/jpeg")
    s3_store.put("archive/broken.jpg", b"\xff\xd8 not really", "image/jpeg")
    items = [{"source": f"s3://{s3_store.bucket}/archive/ok.jpg", "ref": "ok"},
             {"source": f"s3://{s3_store.bucket}/archive/broken.jpg", "ref": "broken"},
             {"source": "s3://elsewhere/x.jpg", "ref": "forbidden"},
             {"source": f"s3://{s3_store.bucket}/archive/../ok.jpg", "ref": "dot-dot"},
             {"source": f"s3://{s3_store.bucket}/archive/ok.jpg", "ref": "ok-again"}]
    response = client.post("/v1/jobs/batch", json={"items": items})
    assert response.status_code == 200
    results = {r["ref"]: r for r in response.json["items"]}
    assert [results[r]["status"] for r in ("ok", "broken", "forbidden", "dot-dot", "ok-again")] == [
        202, 422, 403, 400, 200]
    assert results["ok"]["job"]["id"] == results["ok-again"]["job"]["id"]
    assert results["broken"]["error"]["code"] == "invalid_image"
    assert enqueued == [(results["ok"]["job"]["id"], "backfill")]


def test_multipart_batch_and_batch_limit(client):
    files = [(io.BytesIO(photo_jpeg(40, 30, seed=s)), f"img{s}.jpg") for s in range(2)]
    files.append((io.BytesIO(b"junk"), "junk.jpg"))
    response = client.post("/v1/jobs/batch", data={"image": files}, content_type="multipart/form-data")
    assert [r["status"] for r in response.json["items"]] == [202, 202, 422]
    assert [r["ref"] for r in response.json["items"]] == ["img0.jpg", "img1.jpg", "junk.jpg"]
    too_many = client.post("/v1/jobs/batch", json={"items": [{"source": "s3://x/y"}] * 101})
    assert too_many.status_code == 413 and too_many.json["error"]["code"] == "batch_too_large"


def test_the_first_of_repeated_photos_in_a_batch_is_the_one_that_made_the_job(client, enqueued):
    # Items are accepted concurrently, so any copy may win the content claim; the answer
    # still reads in request order. The old answer depended on which thread won. (Interactive:
    # this app refuses a fourth waiting backfill job.)
    for seed in range(6):
        photo = photo_jpeg(40, 30, seed=300 + seed)
        files = [(io.BytesIO(photo), f"copy{i}.jpg") for i in range(6)]
        items = client.post("/v1/jobs/batch", data={"image": files, "priority": "interactive"},
                            content_type="multipart/form-data").json["items"]
        assert [item["status"] for item in items] == [202, 200, 200, 200, 200, 200]
        assert [item["job"]["deduplicated"] for item in items] == [False, True, True, True, True, True]
        assert len({item["job"]["id"] for item in items}) == 1
    assert len(enqueued) == 6


def test_poll_many_jobs_at_once(client):
    ids = [upload(client, photo_jpeg(32, 32, seed=s)).json["id"] for s in range(3)]
    response = client.get("/v1/jobs?ids=" + ",".join(ids + ["AAAAAAAAAAAAAAAAAAAAAA", "../x"]))
    jobs = response.json["jobs"]
    assert [j["id"] for j in jobs[:3]] == ids and {j["status"] for j in jobs[:3]} == {"queued"}
    assert [j["status"] for j in jobs[3:]] == ["not_found", "not_found"]
    assert client.get("/v1/jobs").status_code == 400


def test_full_backfill_queue_refuses_backfill_but_never_interactive(client, s3_app):
    waiting = [upload(client, photo_jpeg(32, 32, seed=s), priority="backfill") for s in (1, 2, 3)]
    assert [w.status_code for w in waiting] == [202, 202, 202]  # BACKFILL_MAX_QUEUED=3 now wait
    refused = upload(client, photo_jpeg(32, 32, seed=10), priority="backfill")
    assert refused.status_code == 429 and refused.json["error"]["code"] == "queue_full"
    assert refused.headers["Retry-After"] == "5"
    assert client.post("/v1/jobs/batch", json={"items": []}).status_code == 429
    assert upload(client, photo_jpeg(32, 32, seed=11)).status_code == 202
    assert upload(client, photo_jpeg(32, 32, seed=12), priority="urgent").json["error"]["code"] == "bad_request"


def test_canceled_backfill_jobs_stop_counting_against_the_bound_at_once(settings):
    """Through the real queue (Celery messages in Redis, no worker): the messages of
    canceled jobs stay until a worker drops them, but the depth the bound and the metric
    read is the jobs that wait, so it falls with the cancel."""
    app = create_app(settings.model_copy(update={"backfill_max_queued": 3}))
    client, queue = app.test_client(), app.extensions["m2fp"].queue
    ids = [upload(client, photo_jpeg(32, 32, seed=s), priority="backfill").json["id"] for s in (20, 21, 22)]
    assert upload(client, photo_jpeg(32, 32, seed=23), priority="backfill").status_code == 429
    for job_id in ids[:2]:
        assert client.post(f"/v1/jobs/{job_id}/cancel").json["status"] == "canceled"
    assert queue.depth(Priority.BACKFILL) == 1
    assert [upload(client, photo_jpeg(32, 32, seed=s), priority="backfill").status_code for s in (24, 25, 26)] \
        == [202, 202, 429]


class WorkerTakesItBeforePromotion(JobStore):
    """Fault injection: a worker starts the job, and takes it from the waiting order, just
    after the API read it as queued (so before the API gives it an interactive entry)."""

    taken = None

    def job_for_content(self, tenant, digest):
        job = super().job_for_content(tenant, digest)
        if job is not None and job.status is JobStatus.QUEUED:
            self.start(job.id, worker="w", message_id="m")
            self.taken(job.id)
        return job


def test_a_promotion_that_comes_too_late_leaves_no_waiting_entry(settings):
    services = Services.create(settings)
    jobs = WorkerTakesItBeforePromotion(services.jobs.client, services.jobs.ttl, on_event=services.jobs.on_event)
    jobs.taken = services.queue.taken
    client = create_app(services=dataclasses.replace(services, jobs=jobs)).test_client()
    data = photo_jpeg(64, 48, seed=30)
    job_id = upload(client, data, priority="backfill").json["id"]
    late = upload(client, data)
    assert late.status_code == 200 and late.json["id"] == job_id and late.json["status"] == "running"
    assert {p: services.queue.depth(p) for p in Priority} == {Priority.INTERACTIVE: 0, Priority.BACKFILL: 0}
