"""Prometheus metrics through real processes: the API under gunicorn (two request workers,
so every number is summed across processes), Redis, an S3 endpoint and a Celery worker,
scraped over HTTP after jobs that succeeded, failed and were refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Optional

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import MULTIPROC_VARIABLE
from common.storage import S3Store
from scripts.imagegen import photo_jpeg
from scripts.processes import free_port, wait_until
from scripts.stack import Stack, local_system
from tests.conftest import S3_KEYS
from tests.harness import HARNESS_APP, HOLD_FILE_VARIABLE
from tests.test_worker_faults import holding_pids

BUCKET = "m2fp-metrics"
SUBMIT_ROUTE, JOB_ROUTE = "/v1/jobs", "/v1/jobs/<job_id>"


class Scrape:
    """One scrape of a /metrics endpoint, read with prometheus-client's own parser."""

    def __init__(self, url: str) -> None:
        response = requests.get(url, timeout=10)
        assert response.status_code == 200, response.text[:300]
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        self.samples = parse(response.text)

    def value(self, name: str, **labels: str) -> Optional[float]:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        found = [s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()]
        return sum(found) if found else None


def parse(text: str) -> list:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


@pytest.fixture()
def system(tmp_path, redis_server, tiny_model, s3_endpoint):
    store = S3Store(s3_endpoint, S3_KEYS["access_key"], S3_KEYS["secret_key"], BUCKET)
    store.ensure_bucket()
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/7", "M2FP_MODEL": str(tiny_model),
           "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1", "BACKFILL_MAX_QUEUED": "1",
           "S3_ENDPOINT": s3_endpoint, "S3_ACCESS_KEY": S3_KEYS["access_key"],
           "S3_SECRET_KEY": S3_KEYS["secret_key"], "S3_BUCKET": BUCKET}
    with local_system(tmp_path, **env) as stack:
        stack.store = store
        yield stack


def test_both_endpoints_count_what_happened(system):
    api = f"{system.api_url}/metrics"
    # Queued while no worker runs: three uploads (two interactive, one backfill) and a
    # reference whose object is then replaced, so its job fails with source_changed.
    first, second = photo_jpeg(96, 64, seed=1), photo_jpeg(96, 64, seed=2)
    system.store.put("photos/changing.jpg", photo_jpeg(96, 64, seed=3), content_type="image/jpeg")
    answers = [system.submit(first), system.submit(second),
               requests.post(f"{system.api_url}/v1/jobs", json={"source": f"s3://{BUCKET}/photos/changing.jpg"},
                             timeout=30),
               requests.post(f"{system.api_url}/v1/jobs", files={"image": ("b.jpg", photo_jpeg(96, 64, seed=4))},
                             data={"priority": "backfill"}, timeout=30)]
    assert [a.status_code for a in answers] == [202, 202, 202, 202], [a.text for a in answers]
    system.store.put("photos/changing.jpg", photo_jpeg(96, 64, seed=5), content_type="image/jpeg")
    assert system.submit(first).status_code == 200  # the same content: deduplicated
    assert system.submit(first[:150]).status_code == 422  # truncated: refused, invalid_image
    full = requests.post(f"{system.api_url}/v1/jobs", files={"image": ("c.jpg", photo_jpeg(96, 64, seed=6))},
                         data={"priority": "backfill"}, timeout=30)
    assert full.status_code == 429  # one backfill job waits: BACKFILL_MAX_QUEUED=1
    assert requests.get(f"{system.api_url}/no/such/route", timeout=10).status_code == 404

    before = Scrape(api)
    assert before.value("m2fp_queue_depth", priority="interactive") == 3
    assert before.value("m2fp_queue_depth", priority="backfill") == 1
    assert before.value("m2fp_api_submissions_total", priority="interactive", outcome="created") == 3
    assert before.value("m2fp_api_submissions_total", priority="backfill", outcome="created") == 1
    assert before.value("m2fp_api_submissions_total", priority="interactive", outcome="deduplicated") == 1
    assert before.value("m2fp_api_submissions_total", outcome="refused", code="invalid_image") == 1
    assert before.value("m2fp_api_submissions_total", priority="backfill", outcome="refused", code="queue_full") == 1
    requests_of = {status: before.value("m2fp_api_request_duration_seconds_count", method="POST",
                                        route=SUBMIT_ROUTE, status=status) for status in ("202", "200", "422", "429")}
    assert requests_of == {"202": 4, "200": 1, "422": 1, "429": 1}
    assert before.value("m2fp_api_request_duration_seconds_count", route="<unmatched>", status="404") == 1

    port = free_port()
    system.start_worker("metrics", WORKER_METRICS_PORT=str(port))
    ids = [a.json()["id"] for a in answers]
    jobs = [system.wait_for(job_id) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert jobs[2]["error"]["code"] == "source_changed"

    # The counters move just after the record does: wait until the worker's numbers settle.
    worker = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: Scrape(worker).value("m2fp_worker_jobs_total") == 4, 30, "the worker's job counters")
    wait_until(lambda: Scrape(worker).value("m2fp_worker_processes_busy") == 0, 30, "the busy gauge to drop")
    scraped = Scrape(worker)
    assert scraped.value("m2fp_worker_jobs_total", outcome="succeeded") == 3
    assert scraped.value("m2fp_worker_jobs_total", outcome="failed", code="source_changed") == 1
    assert scraped.value("m2fp_worker_queue_wait_seconds_count") == 4  # every job started once
    for step in ("inference", "render", "store"):  # the failed job never reached these steps
        assert scraped.value(f"m2fp_worker_{step}_seconds_count") == 3, step
        assert scraped.value(f"m2fp_worker_{step}_seconds_sum") > 0, step
    waited = scraped.value("m2fp_worker_queue_wait_seconds_sum")
    assert waited > 0

    after = Scrape(api)
    assert after.value("m2fp_queue_depth") == 0
    polls = after.value("m2fp_api_request_duration_seconds_count", method="GET", route=JOB_ROUTE, status="200")
    assert polls >= 4
    routes = {s.labels.get("route") for s in after.samples if "route" in s.labels}
    assert not [route for route in routes if any(job_id in route for job_id in ids)]  # no id ever becomes a label


def test_the_api_starts_with_its_configured_metrics_dir_emptied(tmp_path):
    """What an earlier run left in PROMETHEUS_MULTIPROC_DIR (here: a process that counted
    five submissions) is gone once gunicorn has started, and never summed in."""
    directory = tmp_path / "api-metrics"
    directory.mkdir()
    subprocess.run([sys.executable, "-c", "from prometheus_client import Counter; Counter("
                    "'m2fp_api_submissions', '', ['priority', 'outcome', 'code']).labels('interactive', 'created', '')"
                    ".inc(5)"], env={**os.environ, MULTIPROC_VARIABLE: str(directory)}, check=True)
    [stale] = directory.glob("*.db")
    with local_system(tmp_path / "system", **{MULTIPROC_VARIABLE: str(directory)}) as stack:
        scraped = Scrape(f"{stack.api_url}/metrics")
        assert scraped.value("m2fp_api_submissions_total") is None
        assert scraped.value("m2fp_api_request_duration_seconds_count", route="/healthz") >= 1
        assert not stale.exists() and list(directory.glob("histogram_*.db"))  # the live API's own files


def test_a_model_process_killed_mid_job_stops_counting_as_busy(tmp_path, redis_server, tiny_model):
    """SIGKILL runs no exit hook: the scrape itself drops the dead process's busy value,
    so the job's new process counts once, not twice (harness: the job is held in parse).
    The job is then canceled, and counts as that."""
    hold = tmp_path / "hold"
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/9", "M2FP_MODEL": str(tiny_model),
           "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1", "LOCAL_STORE_DIR": str(tmp_path / "store"),
           HOLD_FILE_VARIABLE: str(hold)}
    stack = Stack(env=env, log_dir=tmp_path, worker_app=HARNESS_APP).start_api()
    try:
        port = free_port()
        stack.start_worker("busy", WORKER_METRICS_PORT=str(port))
        busy = lambda: Scrape(f"http://127.0.0.1:{port}/metrics").value("m2fp_worker_processes_busy")  # noqa: E731
        hold.touch()
        job_id = stack.submit(photo_jpeg(96, 64)).json()["id"]
        wait_until(lambda: holding_pids(hold), 120, "a model process to hold the job")
        [killed] = holding_pids(hold)
        assert busy() == 1
        os.kill(killed, signal.SIGKILL)  # the worker requeues the job to the process that replaces it
        wait_until(lambda: set(holding_pids(hold)) - {killed}, 120, "a new model process to hold the job")
        assert busy() == 1
        # Canceled while held: it stops at the next safe point (before its outputs are stored).
        assert requests.post(f"{stack.api_url}/v1/jobs/{job_id}/cancel", timeout=10).status_code == 202
        hold.unlink()
        assert stack.wait_for(job_id)["status"] == "canceled"
        wait_until(lambda: busy() == 0, 30, "the busy gauge to drop")
        jobs = Scrape(f"http://127.0.0.1:{port}/metrics")
        assert jobs.value("m2fp_worker_jobs_total") == jobs.value("m2fp_worker_jobs_total", outcome="canceled") == 1
    finally:
        stack.stop()


def test_each_batch_item_counts_as_a_submission_with_its_outcome(services):
    """In one process (an app built in a test: no multiprocess directory): a batch of an
    image, its duplicate and a broken file counts one created, one deduplicated and one
    refused submission, at the batch's default priority."""
    import io

    from api.app import create_app

    client = create_app(services=services).test_client()

    def submissions() -> dict[tuple[str, str, str], float]:
        page = client.get("/metrics")
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return {(s.labels["priority"], s.labels["outcome"], s.labels["code"]): s.value
                for s in parse(page.get_data(as_text=True)) if s.name == "m2fp_api_submissions_total"}

    before = submissions()
    photo = photo_jpeg(96, 64, seed=11)
    answer = client.post("/v1/jobs/batch", content_type="multipart/form-data", data={"image": [
        (io.BytesIO(photo), "a.jpg"), (io.BytesIO(photo), "b.jpg"), (io.BytesIO(b"not an image"), "c.jpg")]})
    assert [item["status"] for item in answer.get_json()["items"]] == [202, 200, 422]
    after = submissions()
    moved = {key: value - before.get(key, 0) for key, value in after.items() if value != before.get(key, 0)}
    assert moved == {("backfill", "created", ""): 1, ("backfill", "deduplicated", ""): 1,
                     ("backfill", "refused", "invalid_image"): 1}


def test_a_method_no_route_knows_is_counted_as_other(services):
    """A client may send any method token; the label stays within a fixed set."""
    from api.app import create_app

    client = create_app(services=services).test_client()
    for method in ("BREW", "PROPFIND", "X-" + "A" * 40):
        assert client.open("/v1/jobs", method=method).status_code == 405
    samples = parse(client.get("/metrics").get_data(as_text=True))
    methods = {s.labels["method"] for s in samples if s.name == "m2fp_api_request_duration_seconds_count"}
    assert "other" in methods and methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
