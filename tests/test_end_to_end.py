"""End to end through real processes: gunicorn API, Redis, a Celery worker running the
tiny synthetic model, and each store (local directory; S3 endpoint on loopback)."""
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from common.labels import PALETTE
from tests.conftest import S3_KEYS
from tests.who_is_who import check_who_is_who
from scripts.imagegen import encode, photo, photo_jpeg
from scripts.stack import Stack



@pytest.fixture(scope="module", params=["local", "s3"])
def stack(request, redis_server, tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"stack-{request.param}")
    env = {
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + ("/1" if request.param == "local" else "/2"),
        "M2FP_MODEL": str(tiny_model),
        "INFERENCE_MAX_SIDE": "320",
        "TORCH_THREADS": "1",
        "LOCAL_STORE_DIR": str(base / "store"),
    }
    if request.param == "s3":
        from common.storage import S3Store

        endpoint = request.getfixturevalue("s3_endpoint")
        S3Store(endpoint, S3_KEYS["access_key"], S3_KEYS["secret_key"], "m2fp-e2e").ensure_bucket()
        env.update(S3_ENDPOINT=endpoint, S3_ACCESS_KEY=S3_KEYS["access_key"],
                   S3_SECRET_KEY=S3_KEYS["secret_key"], S3_BUCKET="m2fp-e2e")
    running = Stack(env=env, log_dir=base).start_api()
    running.start_worker("w1")
    yield running
    running.stop()


def fetch(url: str) -> bytes:
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, (url, response.text[:300])
    return response.content


def test_jpeg_job_succeeds_with_outputs_at_the_input_size(stack):
    submitted = stack.submit(photo_jpeg(333, 250, seed=7))
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.headers["Location"] == f"/v1/jobs/{job_id}"

    job = stack.wait_for(job_id)
    assert job["status"] == "succeeded", job
    assert job["started_at"] and job["finished_at"] and job["attempts"] == 1
    outputs = job["result"]["outputs"]
    assert set(outputs) == {"colored.png", "labels.png", "persons.png", "overlay.jpg", "result.json"}
    if "S3_ENDPOINT" in stack.env:
        assert "X-Amz-Signature=" in outputs["colored.png"]  # presigned, straight from the store
    else:
        assert outputs["colored.png"].startswith(stack.api_url)

    colored = Image.open(io.BytesIO(fetch(outputs["colored.png"])))
    assert colored.size == (333, 250) and colored.mode == "RGB"
    labels = np.asarray(Image.open(io.BytesIO(fetch(outputs["labels.png"]))))
    assert labels.shape == (250, 333) and labels.max() < 20 and len(np.unique(labels)) >= 3
    # Each pixel has its own label's color (the palette itself is pinned in test_outputs).
    assert (PALETTE[labels] == np.asarray(colored)).all()
    assert Image.open(io.BytesIO(fetch(outputs["overlay.jpg"]))).size == (333, 250)

    summary = json.loads(fetch(outputs["result.json"]))
    assert summary["job_id"] == job_id and summary["persons"] >= 1
    assert {c["id"] for c in summary["classes"]} == set(np.unique(labels).tolist())
    assert len(summary["legend"]) == 20
    assert job["result"]["summary"]["classes"] == summary["classes"]

    # Who is who: every part pixel belongs to exactly one person of result.json.
    people = check_who_is_who(fetch(outputs["labels.png"]), fetch(outputs["persons.png"]),
                              fetch(outputs["result.json"]))["people"]
    assert job["result"]["summary"]["people"] == people


def test_odd_inputs_are_converted_and_parsed(stack):
    gray16 = encode(Image.fromarray((photo(90, 60)[..., 0].astype(np.uint16) * 257)), "PNG")
    rotated = encode(photo(120, 60), "JPEG", exif_orientation=6)
    ids = [stack.submit(data, "x.png").json()["id"] for data in (gray16, rotated)]
    jobs = [stack.wait_for(job_id) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
    assert (jobs[1]["result"]["summary"]["width"], jobs[1]["result"]["summary"]["height"]) == (60, 120)


def test_many_jobs_submitted_at_once_all_finish(stack):
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda seed: stack.submit(photo_jpeg(96, 64, seed)), range(6)))
    assert [r.status_code for r in responses] == [202] * 6
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 6
    assert {stack.wait_for(job_id)["status"] for job_id in ids} == {"succeeded"}


def test_corrupt_upload_gets_a_4xx_over_http(stack):
    response = stack.submit(photo_jpeg(64, 64)[:150])
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_image"


def test_readiness_over_http(stack):
    response = requests.get(f"{stack.api_url}/readyz", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ready"


def test_a_job_in_another_label_set_comes_out_in_its_ids_and_palette(stack):
    from common.profiles import SIMPLE

    response = requests.post(f"{stack.api_url}/v1/jobs", files={"image": ("p.jpg", photo_jpeg(200, 150), "image/jpeg")},
                             data={"labels": "simple", "labels_format": "palette"}, timeout=30)
    assert response.status_code == 202, response.text
    job = stack.wait_for(response.json()["id"])
    assert (job["status"], job["labels"], job["labels_format"]) == ("succeeded", "simple", "palette")
    outputs = job["result"]["outputs"]
    png = Image.open(io.BytesIO(requests.get(outputs["labels.png"], timeout=10).content))
    values = np.asarray(png)
    assert png.mode == "P" and values.max() < len(SIMPLE.classes)
    persons = np.asarray(Image.open(io.BytesIO(requests.get(outputs["persons.png"], timeout=10).content)))
    assert ((persons > 0) == (values > 0)).all()
    summary = job["result"]["summary"]
    assert summary["labels"] == "simple" and {c["id"] for c in summary["classes"]} == set(np.unique(values).tolist())
    assert all(c["name"] == SIMPLE.classes[c["id"]] for c in summary["classes"])
