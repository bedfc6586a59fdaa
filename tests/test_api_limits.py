"""The API's limits as clients meet them: what a batch may hold, how its reads run, what
a refused submission costs (real Redis, a real S3 endpoint, the app in process)."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from api.app import create_app
from common.services import Services
from common.settings import Settings
from scripts.imagegen import encode, photo_jpeg
from tests.conftest import S3_KEYS
from tests.harness.probes import MeetingReads
from tests.harness.queues import RecordingQueue


def noise_png(side: int, seed: int) -> bytes:
    """A PNG that does not compress: about 3 bytes a pixel."""
    return encode(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8), "PNG")


def in_process(settings: Settings, **services_changes):
    """The app on ``settings`` with a queue that only records (no Celery message is sent)."""
    services = Services.create(settings)
    recording = RecordingQueue(services.queue, lambda *_: None)
    return create_app(services=dataclasses.replace(services, queue=recording, **services_changes))


def batch_of(client, files: list[tuple[bytes, str]]):
    return client.post("/v1/jobs/batch", data={"image": [(io.BytesIO(data), name) for data, name in files]},
                       content_type="multipart/form-data")


def test_a_multipart_batch_holds_many_images_up_to_max_batch_bytes(settings):
    """Each file up to MAX_UPLOAD_BYTES, the whole body up to MAX_BATCH_BYTES (it used to
    be held to one image's size, so three photos of 140 KB under a 200 KB limit failed)."""
    app = in_process(settings.model_copy(update={"max_upload_bytes": 200_000, "max_batch_bytes": 600_000}))
    client = app.test_client()
    photos = [(noise_png(216, seed), f"p{seed}.png") for seed in range(5)]
    assert all(140_000 < len(data) < 200_000 for data, _ in photos)

    three = batch_of(client, photos[:3])
    assert three.status_code == 200, three.json
    assert [(item["ref"], item["status"]) for item in three.json["items"]] == [
        ("p0.png", 202), ("p1.png", 202), ("p2.png", 202)]

    too_much = batch_of(client, photos)  # 5 x 140 KB > 600 KB
    assert too_much.status_code == 413 and too_much.json["error"]["code"] == "payload_too_large"
    assert str(600_000 + 64 * 1024) in too_much.json["error"]["message"]

    oversized = (noise_png(270, 9), "big.png")  # one file above MAX_UPLOAD_BYTES fails alone
    mixed = batch_of(client, [photos[3], oversized])
    assert [item["status"] for item in mixed.json["items"]] == [202, 413]
    assert mixed.json["items"][1]["error"]["code"] == "payload_too_large"

    # Everything else still carries one image at most.
    body = {"image": (io.BytesIO(b"".join(data for data, _ in photos[:2])), "two.png")}
    single = client.post("/v1/jobs", data=body, content_type="multipart/form-data")
    assert single.status_code == 413 and single.json["error"]["code"] == "payload_too_large"
    json_batch = client.post("/v1/jobs/batch", json={"items": [{"source": "s3://x/" + "k" * 1000}] * 100,
                                                     "padding": "x" * 300_000})
    assert json_batch.status_code == 413


def test_max_batch_bytes_below_one_image_is_refused_with_the_fix(settings):
    with pytest.raises(ValueError, match="raise MAX_BATCH_BYTES"):
        Settings(**{**settings.model_dump(), "max_upload_bytes": 1000, "max_batch_bytes": 999})


@pytest.fixture()
def s3_settings(settings, s3_endpoint, s3_store) -> Settings:
    return Settings(**{**settings.model_dump(), "s3_endpoint": s3_endpoint, "s3_bucket": s3_store.bucket,
                       "s3_access_key": S3_KEYS["access_key"], "s3_secret_key": S3_KEYS["secret_key"],
                       "storage_backend": "s3", "batch_read_concurrency": 4})


def test_a_reference_batch_reads_its_objects_concurrently_within_the_bound_in_order(s3_settings, s3_endpoint,
                                                                                    s3_store):
    """8 references, BATCH_READ_CONCURRENCY=4: the reads meet four at a time (one at a
    time they would never meet, and the request would fail), never more than four, and
    each answer is in its item's place."""
    keys = [f"archive/{n}.jpg" for n in range(8)]
    for n, key in enumerate(keys):
        s3_store.put(key, photo_jpeg(48, 32, seed=100 + n), "image/jpeg")
    reads = MeetingReads(s3_endpoint, S3_KEYS["access_key"], S3_KEYS["secret_key"], s3_store.bucket, parties=4)
    client = in_process(s3_settings, storage=reads).test_client()
    items = [{"source": f"s3://{s3_store.bucket}/{key}", "ref": key} for key in keys]
    items.insert(3, {"source": "s3://elsewhere/a.jpg", "ref": "forbidden"})
    items.insert(6, {"source": {"bucket": s3_store.bucket}, "ref": "malformed"})

    response = client.post("/v1/jobs/batch", json={"items": items})
    assert response.status_code == 200, response.json
    answers = response.json["items"]
    assert [answer["ref"] for answer in answers] == [item["ref"] for item in items]
    assert reads.most_at_once == 4
    by_ref = {answer["ref"]: answer for answer in answers}
    assert (by_ref["forbidden"]["status"], by_ref["malformed"]["status"]) == (403, 400)
    for key in keys:
        assert by_ref[key]["status"] == 202
        assert by_ref[key]["job"]["input"]["source"] == f"s3://{s3_store.bucket}/{key}"


def test_a_submission_refused_as_queue_full_costs_no_rate_tokens(settings):
    """3 submissions a minute; one backfill job fills the backfill queue. The refused
    backfill upload and batch cost nothing, so two interactive uploads still fit, and
    then the key's minute is spent."""
    app = in_process(settings.model_copy(update={"submit_rate_per_minute": 3, "backfill_max_queued": 1}))
    client = app.test_client()

    def upload(seed: int, **form):
        return client.post("/v1/jobs", data={"image": (io.BytesIO(photo_jpeg(32, 32, seed=seed)), "a.jpg"), **form},
                           content_type="multipart/form-data")

    assert upload(1, priority="backfill").status_code == 202
    assert upload(2, priority="backfill").json["error"]["code"] == "queue_full"
    assert batch_of(client, [(photo_jpeg(32, 32, seed=3), "b.jpg")]).json["error"]["code"] == "queue_full"
    assert [upload(seed).status_code for seed in (4, 5)] == [202, 202]
    assert upload(6).json["error"]["code"] == "rate_limited"
