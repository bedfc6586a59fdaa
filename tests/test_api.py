"""The HTTP contract: status codes, error bodies, job views (real Redis and store)."""
import io

import numpy as np
import pytest

import dataclasses

from api.app import create_app
from common.jobs import InputInfo, JobError, JobResult, Priority, input_key, output_key
from common.queue import JobQueue
from common.services import Services
from common.storage import LocalStore
from scripts.imagegen import encode, photo_jpeg
from tests.harness.faults import FailingWritesStore, TakenIdJobStore
from scripts.processes import wait_until
from tests.harness.queues import DownQueue, RecordingQueue
from worker.sweeper import Sweeper


@pytest.fixture()
def enqueued():
    return []


@pytest.fixture()
def app(settings, enqueued):
    settings = settings.model_copy(update={"max_upload_bytes": 200_000, "max_pixels": 1_000_000})
    services = Services.create(settings)
    recording = RecordingQueue(services.queue, lambda job_id, priority: enqueued.append(job_id))
    return create_app(services=dataclasses.replace(services, queue=recording))


@pytest.fixture()
def client(app):
    return app.test_client()


def submit(client, data: bytes, filename: str = "photo.jpg"):
    return client.post("/v1/jobs", data={"image": (io.BytesIO(data), filename)},
                       content_type="multipart/form-data")


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == code and body["error"]["message"]


def test_submit_accepts_stores_and_enqueues(client, app, enqueued):
    response = submit(client, photo_jpeg(120, 80), filename="../../etc/evil name.jpg")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and response.headers["Location"] == f"/v1/jobs/{body['id']}"
    assert {k: body["input"][k] for k in ("width", "height", "format")} == {"width": 120, "height": 80, "format": "JPEG"}
    assert enqueued == [body["id"]]
    store = app.extensions["m2fp"].storage
    assert store.get(input_key(body["id"]))[:2] == b"\xff\xd8"
    stored = [p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()]
    assert stored == [input_key(body["id"])]  # the client's filename is never used


def test_poll_shows_the_record(client):
    job_id = submit(client, photo_jpeg(64, 64)).get_json()["id"]
    body = client.get(f"/v1/jobs/{job_id}").get_json()
    assert body["id"] == job_id and body["status"] == "queued" and body["created_at"].endswith("Z")
    assert "result" not in body and "error" not in body


def test_succeeded_job_links_outputs_served_by_the_api(client, app):
    deps = app.extensions["m2fp"]
    job_id = submit(client, photo_jpeg(64, 64)).get_json()["id"]
    deps.jobs.start(job_id, worker="w", message_id="m")
    deps.storage.put(output_key(job_id, "colored.png"), b"\x89PNG...", "image/png")
    deps.jobs.succeed(job_id, JobResult(outputs={"colored.png": output_key(job_id, "colored.png")},
                                        summary={"persons": 1}))
    body = client.get(f"/v1/jobs/{job_id}").get_json()
    link = body["result"]["outputs"]["colored.png"]
    assert link == f"http://localhost/v1/jobs/{job_id}/outputs/colored.png"
    download = client.get(link)
    assert download.status_code == 200 and download.data == b"\x89PNG..." and download.mimetype == "image/png"
    assert_error(client.get(f"/v1/jobs/{job_id}/outputs/labels.png"), 404, "not_found")
    assert_error(client.get(f"/v1/jobs/{job_id}/outputs/input"), 404, "not_found")


def test_failed_job_shows_its_error(client, app):
    deps = app.extensions["m2fp"]
    job_id = submit(client, photo_jpeg(64, 64)).get_json()["id"]
    deps.jobs.fail(job_id, JobError(code="invalid_image", message="bad"))
    body = client.get(f"/v1/jobs/{job_id}").get_json()
    assert body["status"] == "failed" and body["error"] == {"code": "invalid_image", "message": "bad"}


# Uploads refused at submission, under the app fixture's MAX_UPLOAD_BYTES 200_000 and
# MAX_PIXELS 1_000_000 (docs/api.md, "Limits" and the error table).
BAD_UPLOADS = [
    (b"", 422, "invalid_image"),
    (b"%PDF-1.4 not an image", 422, "invalid_image"),
    (photo_jpeg(64, 64)[:200], 422, "invalid_image"),
    (encode(np.zeros((1100, 1000, 3), np.uint8), "PNG"), 413, "image_too_large"),
    # a file above MAX_UPLOAD_BYTES in a body within it plus the 64 KiB envelope, then a body past that too
    (np.random.default_rng(1).integers(0, 256, 230_000, dtype=np.uint8).tobytes(), 413, "payload_too_large"),
    (np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes(), 413, "payload_too_large"),
]
BAD_UPLOAD_IDS = ["empty", "pdf", "truncated", "too-many-pixels", "file-too-large", "body-too-large"]


@pytest.mark.parametrize("data, status, code", BAD_UPLOADS, ids=BAD_UPLOAD_IDS)
def test_bad_uploads_get_a_4xx_and_no_job(client, enqueued, data, status, code):
    assert_error(submit(client, data), status, code)
    assert enqueued == []


DEMO_ROUTES = [("/api/parse", "file"), ("/parse", "image")]  # the M2FP demo's routes and their file fields


@pytest.mark.parametrize("path, field", DEMO_ROUTES)
@pytest.mark.parametrize("data, status, code", BAD_UPLOADS, ids=BAD_UPLOAD_IDS)
def test_the_demos_routes_refuse_bad_uploads_as_every_submission_and_make_no_job(client, enqueued, path, field,
                                                                                data, status, code):
    answer = client.post(path, data={field: (io.BytesIO(data), "photo.jpg")}, content_type="multipart/form-data")
    assert_error(answer, status, code)
    assert enqueued == []


def app_with_a_worker(settings, worker_settings, before_run=None):
    """The app with a worker behind its queue: each job is run by the real job runner (on
    ``worker_settings``, the tiny model never reached: these jobs fail before the parse)
    as soon as its message is sent, after ``before_run(services, job_id)``."""
    from worker.job_runner import run_job

    class NoParse:
        description = {"engine": "none"}

        def parse(self, image):
            raise AssertionError("this job was to fail before its parse")

    services = Services.create(settings)
    worker = Services.create(worker_settings)

    def take(job_id, _priority):
        if before_run:
            before_run(worker, job_id)
        run_job(worker, NoParse(), job_id, worker="w", message_id="m")

    return create_app(services=dataclasses.replace(services, queue=RecordingQueue(services.queue, take)))


@pytest.mark.parametrize("path, field", DEMO_ROUTES)
def test_a_demo_job_that_fails_in_the_worker_answers_its_error_with_422_for_a_jobs_own_code(settings, path, field):
    # The input is gone from the store when the worker takes the job (a lifecycle rule):
    # input_missing is a code only a job carries, answered 422 (docs/api.md, "Synchronous answers").
    failed = []

    def lose_input(worker, job_id):
        worker.storage.delete(input_key(job_id))
        failed.append(job_id)

    client = app_with_a_worker(settings, settings, lose_input).test_client()
    answer = client.post(path, data={field: (io.BytesIO(photo_jpeg(64, 48)), "p.jpg")},
                         content_type="multipart/form-data")
    assert_error(answer, 422, "input_missing")
    [job_id] = failed
    job = client.get(f"/v1/jobs/{job_id}").get_json()
    assert job["status"] == "failed" and job["error"] == answer.get_json()["error"]


@pytest.mark.parametrize("path, field", DEMO_ROUTES)
def test_a_demo_job_that_fails_in_the_worker_answers_its_error_with_that_codes_status(settings, path, field):
    # Workers held to fewer pixels than the API: the photo passes the API and fails in the
    # worker's decode, image_too_large, whose status is 413.
    strict = settings.model_copy(update={"max_pixels": 64 * 47})
    client = app_with_a_worker(settings, strict).test_client()
    answer = client.post(path, data={field: (io.BytesIO(photo_jpeg(64, 48)), "p.jpg")},
                         content_type="multipart/form-data")
    assert_error(answer, 413, "image_too_large")
    assert "64x48" in answer.get_json()["error"]["message"]


def test_request_errors_are_json(client):
    assert_error(client.post("/v1/jobs", data={"file": "x"}), 400, "missing_image")
    assert_error(client.post("/v1/jobs", json={"image": "x"}), 400, "invalid_source")
    assert_error(client.get("/v1/jobs/does-not-exist"), 404, "not_found")
    assert_error(client.get("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA"), 404, "not_found")
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.delete("/v1/jobs"), 405, "method_not_allowed")


def assert_nothing_left(services, store: LocalStore, job_store, data: bytes) -> None:
    """No record, no file, nothing counted as waiting; and the same bytes, sent again to
    a working service, make a new job (the failed one's content claim went with it)."""
    assert [p for p in store.root.rglob("*") if p.is_file()] == []
    assert job_store.client.keys(job_store.prefix + "*") == []
    assert sum(services.queue.depth(priority) for priority in Priority) == 0
    working = create_app(services=dataclasses.replace(services, storage=store)).test_client()
    again = submit(working, data)
    assert again.status_code == 202 and again.get_json()["status"] == "queued", again.get_json()


def test_a_failed_send_still_accepts_the_job_and_the_sweeper_sends_its_message(services, job_store, tmp_path):
    """Once the record exists, another submission of the same bytes may have been
    answered with it: it is never rolled back. The job is accepted, and the sweep sends
    the message the broker refused."""
    store = LocalStore(tmp_path / "s")
    client = create_app(services=dataclasses.replace(services, storage=store, queue=DownQueue(services.queue))
                        ).test_client()
    data = photo_jpeg(64, 64)
    response = submit(client, data)
    assert response.status_code == 202, response.get_data(as_text=True)
    job_id = response.get_json()["id"]
    assert submit(client, data).get_json()["id"] == job_id  # the same content, the same job
    assert store.get(input_key(job_id))[:2] == b"\xff\xd8"

    sent = []
    quick = services.settings.model_copy(update={"worker_heartbeat_seconds": 0.05, "stranded_after_seconds": 0.2})
    recording = RecordingQueue(JobQueue(quick, services.redis), lambda job_id, priority: sent.append((job_id, priority)))
    sweeper = Sweeper(dataclasses.replace(services, settings=quick, queue=recording))
    wait_until(lambda: job_id in sweeper.sweep().resent, 10, "the sweep to resend the job's message")
    assert sent == [(job_id, Priority.INTERACTIVE)] and job_store.get(job_id).status.value == "queued"


def test_a_write_that_fails_half_way_is_503_and_leaves_nothing_behind(services, job_store, tmp_path):
    store = FailingWritesStore(tmp_path / "s")
    client = create_app(services=dataclasses.replace(services, storage=store)).test_client()
    data = photo_jpeg(64, 64)
    response = submit(client, data)
    assert_error(response, 503, "storage_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert_nothing_left(services, LocalStore(tmp_path / "s"), job_store, data)


INPUT_OF_ANOTHER = InputInfo(width=64, height=48, format="JPEG", bytes=21, sha256="0" * 64)


def test_a_taken_id_never_touches_another_job(services, job_store, tmp_path):
    """If a new id were already taken (128 random bits: it cannot happen by chance), the
    submission fails and the job that holds the id keeps its record."""
    store = LocalStore(tmp_path / "s")
    others = []

    def make_other(job_id: str) -> None:
        others.append(job_store.create(job_id, INPUT_OF_ANOTHER, Priority.BACKFILL))

    jobs = TakenIdJobStore(services.jobs, make_other)
    client = create_app(services=dataclasses.replace(services, storage=store, jobs=jobs)).test_client()
    assert_error(submit(client, photo_jpeg(64, 64)), 500, "internal_error")
    [other] = others
    assert job_store.get(other.id) == other


def test_health_and_readiness(client, settings, tmp_path):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"redis": "ok", "storage": "ok"}

    dead_redis = settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    down = create_app(services=Services.create(dead_redis, redis_retries=0)).test_client().get("/readyz")
    assert down.status_code == 503 and down.get_json()["checks"]["redis"].startswith("unavailable")
