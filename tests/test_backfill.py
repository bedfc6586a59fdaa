"""Backfill and scaling through real processes: gunicorn API, Redis, Celery workers
with the tiny synthetic model, a moto S3 endpoint, and the backfill script itself."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import uuid

import pytest
import redis
import requests

from m2fp_contract.schema import OUTPUTS
from common.storage import S3Store
from scripts.imagegen import photo_jpeg
from scripts.processes import REPO, wait_until
from scripts.stack import Stack
from tests.conftest import S3_KEYS
from tests.harness import HARNESS_APP, HOLD_FILE_VARIABLE

IMAGES = 200


@pytest.fixture()
def stack(redis_server, tiny_model, s3_endpoint, tmp_path):
    name = f"backfill-{uuid.uuid4().hex[:12]}"
    bucket = S3Store(s3_endpoint, S3_KEYS["access_key"], S3_KEYS["secret_key"], name)
    bucket.ensure_bucket()
    env = {
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/4",
        "M2FP_MODEL": str(tiny_model), "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1",
        "S3_ENDPOINT": s3_endpoint, "S3_ACCESS_KEY": S3_KEYS["access_key"],
        "S3_SECRET_KEY": S3_KEYS["secret_key"], "S3_BUCKET": name,
        HOLD_FILE_VARIABLE: str(tmp_path / "hold"),
    }
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    running = Stack(env=env, log_dir=tmp_path, worker_app=HARNESS_APP).start_api()
    running.store = bucket
    running.redis = redis.Redis.from_url(env["REDIS_URL"])
    yield running
    running.stop()


def backfill_command(stack: Stack, src: str, tmp_path, *args: str) -> list[str]:
    return [sys.executable, "-m", "scripts.backfill", src, "--api-url", stack.api_url,
            "--state", str(tmp_path / "state.sqlite"), "--report", str(tmp_path / "report.jsonl"),
            "--poll-interval", "0.2", *args]


def run_backfill(stack: Stack, src: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(backfill_command(stack, src, tmp_path, *args), cwd=REPO, env=stack.process_env(),
                          capture_output=True, text=True, timeout=600)


def report(tmp_path) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    return lines[:-1], lines[-1]["summary"]


def job_records(stack: Stack) -> list[dict]:
    ids = [key.decode().rsplit(":", 1)[1] for key in stack.redis.keys("m2fp:job:*")]
    return [stack.job(job_id) for job_id in ids]


def like_a_terminal() -> None:
    """Give the child the SIGINT a terminal would: a shell starting the test run in the
    background (`make test &`) leaves SIGINT ignored, and Python keeps it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def submitted_count(state_path) -> int:
    if not state_path.exists():
        return 0
    with sqlite3.connect(state_path) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'").fetchone():
            return 0  # the backfill has created the file but not yet its tables
        return db.execute("SELECT COUNT(DISTINCT job_id) FROM items WHERE job_id IS NOT NULL").fetchone()[0]


def archive_files() -> dict[str, bytes]:
    """200 images (some nested), a copy of one, a broken one, and a file that is no image."""
    files = {f"{'nested/' if i % 3 else ''}img{i:03d}.jpg": photo_jpeg(32, 32, seed=i) for i in range(IMAGES)}
    files["copy-of-img000.jpg"] = files["img000.jpg"]  # same content
    files["broken.jpg"] = b"\xff\xd8 truncated"
    files["notes.txt"] = b"not an image"
    return files


def in_folder(stack: Stack, tmp_path, files: dict[str, bytes]) -> tuple[str, str]:
    folder = tmp_path / "archive"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return str(folder), ""


def in_bucket(stack: Stack, tmp_path, files: dict[str, bytes]) -> tuple[str, str]:
    for name, data in files.items():
        stack.store.put(f"archive/{name}", data, "application/octet-stream")
    return f"s3://{stack.store.bucket}/archive/", "archive/"


@pytest.mark.parametrize("place", [in_folder, in_bucket], ids=["folder", "s3-prefix"])
def test_backfill_survives_an_interrupt_and_parses_each_image_once(stack, tmp_path, place):
    src, prefix = place(stack, tmp_path, archive_files())

    hold = tmp_path / "hold"
    hold.touch()  # the worker holds its first job: the script fills its in-flight window and waits
    stack.start_worker("w1")
    first = subprocess.Popen(backfill_command(stack, src, tmp_path, "--in-flight", "24", "--batch-size", "8"),
                             cwd=REPO, env=stack.process_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=like_a_terminal)
    try:
        wait_until(lambda: submitted_count(tmp_path / "state.sqlite") >= 24, 120, "24 submitted images")
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 130, output
    assert "run the same command again to resume" in output
    assert submitted_count(tmp_path / "state.sqlite") == 24  # the in-flight bound held while jobs waited

    hold.unlink()
    second = run_backfill(stack, src, tmp_path, "--in-flight", "24", "--batch-size", "8")
    assert second.returncode == 1, second.stderr[-3000:]  # one image is broken
    rows, summary = report(tmp_path)
    assert len(rows) == IMAGES + 2 and summary["images"] == IMAGES + 2
    by_name = {row["name"].removeprefix(prefix): row for row in rows}
    assert by_name["broken.jpg"]["status"] == "failed" and by_name["broken.jpg"]["error"]["code"] == "invalid_image"
    assert all(row["status"] == "succeeded" for name, row in by_name.items() if name != "broken.jpg")
    assert by_name["copy-of-img000.jpg"]["job_id"] == by_name["img000.jpg"]["job_id"]
    assert set(by_name["img000.jpg"]["outputs"]) == set(OUTPUTS)
    records = job_records(stack)
    assert len(records) == IMAGES  # 200 distinct images, one job each: nothing submitted twice
    assert {r["attempts"] for r in records} == {1}  # and nothing parsed twice


def test_s3_prefix_backfill_submits_by_reference(stack, tmp_path):
    for i in range(IMAGES):
        stack.store.put(f"archive/2024/{i:03d}.jpg", photo_jpeg(32, 32, seed=1000 + i), "image/jpeg")
    stack.store.put("archive/2024/skip-me.jpg", photo_jpeg(32, 32, seed=5), "image/jpeg")
    stack.store.put("archive/readme.txt", b"text", "text/plain")
    stack.store.put("elsewhere/x.jpg", photo_jpeg(32, 32, seed=6), "image/jpeg")
    src = f"s3://{stack.store.bucket}/archive/"

    dry = run_backfill(stack, src, tmp_path, "--dry-run", "--exclude", "*skip*")
    assert dry.returncode == 0 and len(dry.stdout.split()) == IMAGES and "archive/2024/000.jpg" in dry.stdout
    assert stack.redis.keys("m2fp:job:*") == []

    stack.start_worker("w1")
    done = run_backfill(stack, src, tmp_path, "--exclude", "*skip*", "--in-flight", "40")
    assert done.returncode == 0, done.stderr[-3000:]
    rows, summary = report(tmp_path)
    assert len(rows) == IMAGES and summary["by_status"] == {"succeeded": IMAGES}
    records = job_records(stack)
    assert len(records) == IMAGES
    assert {r["input"]["source"].rsplit("/", 1)[0] for r in records} == {f"s3://{stack.store.bucket}/archive/2024"}
    assert {r["priority"] for r in records} == {"backfill"}
    assert [k for k, _ in stack.store.iter_keys("jobs/") if k.endswith("/input")] == []  # never copied

    again = run_backfill(stack, src, tmp_path, "--exclude", "*skip*")
    assert again.returncode == 0 and len(job_records(stack)) == IMAGES  # a finished backfill submits nothing


def hold_markers(tmp_path) -> dict[str, int]:
    return {p.name: int(p.read_text()) for p in tmp_path.glob("holding-*") if p.read_text()}


def test_two_workers_share_the_queue_and_no_job_runs_twice(stack, tmp_path):
    hold = tmp_path / "hold"
    hold.touch()
    stack.start_worker("alpha")
    stack.start_worker("beta")
    ids = [stack.submit(photo_jpeg(32, 32, seed=2000 + i)).json()["id"] for i in range(30)]
    # Each worker holds one job: both took work from the one queue.
    wait_until(lambda: len(set(hold_markers(tmp_path).values())) == 2, 120, "both workers to hold a job")
    hold.unlink()
    jobs = [stack.wait_for(job_id) for job_id in ids]
    assert {j["status"] for j in jobs} == {"succeeded"} and {j["attempts"] for j in jobs} == {1}
    records = {r["id"]: r for r in job_records(stack)}
    nodes = {records[j]["worker"].split("@")[0] for j in ids}
    assert nodes == {"alpha", "beta"}
    for worker in stack.workers:  # each logged how it sized itself
        assert "Resource plan: " in worker.log_text() and "running 1 process(es)" in worker.log_text()


def test_interactive_job_jumps_a_backfill_backlog(stack, tmp_path):
    hold = tmp_path / "hold"
    hold.touch()
    stack.start_worker("only")
    backfill_ids = []
    for start in range(0, 300, 100):  # 300 backfill jobs waiting
        files = [("image", (f"b{i}.jpg", photo_jpeg(32, 32, seed=3000 + i), "image/jpeg"))
                 for i in range(start, start + 100)]
        response = requests.post(f"{stack.api_url}/v1/jobs/batch", files=files, timeout=60)
        backfill_ids += [item["job"]["id"] for item in response.json()["items"]]
    wait_until(lambda: hold_markers(tmp_path), 120, "the worker to hold its first backfill job")
    assert stack.redis.llen("m2fp.backfill") == 299  # their messages in the Celery queue
    assert stack.redis.zcard("m2fp:waiting:m2fp.backfill") == 299  # the waiting jobs backpressure counts
    interactive = stack.submit(photo_jpeg(48, 48, seed=1)).json()["id"]
    hold.unlink()
    assert stack.wait_for(interactive)["status"] == "succeeded"
    started = sorted((job["started_at"], job["id"]) for job in job_records(stack) if job["started_at"])
    assert started[1][1] == interactive  # the next job after the one in hand
    assert len(backfill_ids) == 300 and started[0][1] in backfill_ids


def test_interactive_resubmission_of_queued_backfill_content_jumps_the_backlog(stack, tmp_path):
    hold = tmp_path / "hold"
    hold.touch()
    stack.start_worker("only")
    images = [photo_jpeg(32, 32, seed=5000 + i) for i in range(40)]
    files = [("image", (f"b{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    ids = [item["job"]["id"] for item in
           requests.post(f"{stack.api_url}/v1/jobs/batch", files=files, timeout=60).json()["items"]]
    wait_until(lambda: hold_markers(tmp_path), 120, "the worker to hold its first backfill job")
    again = stack.submit(images[-1])  # a user uploads the photo the backfill queued last
    assert again.status_code == 200 and again.json()["deduplicated"], again.json()
    assert again.json()["id"] == ids[-1] and again.json()["priority"] == "interactive"
    hold.unlink()
    jobs = [stack.wait_for(job_id) for job_id in ids]
    assert {j["status"] for j in jobs} == {"succeeded"} and {j["attempts"] for j in jobs} == {1}
    started = [job_id for _, job_id in sorted((j["started_at"], j["id"]) for j in jobs)]
    assert started[1] == ids[-1]  # right after the job in hand, not after 38 others
    assert f"job {ids[-1]} is already succeeded" in stack.workers[0].log_text()  # its spare message, dropped


def test_an_oversized_file_fails_alone(stack, tmp_path):
    import numpy as np

    from scripts.imagegen import encode

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "small.jpg").write_bytes(photo_jpeg(32, 32, seed=77))
    rng = np.random.default_rng(0)
    (folder / "huge.png").write_bytes(encode(rng.integers(0, 256, (2000, 2000, 3), dtype=np.uint8), "PNG"))  # ~12 MB
    # Three files that fit the 4 MiB limit alone but not together in one batch request,
    # under names a multipart parser does not echo back unchanged.
    big = ["50%22off.png", "back\\slash.png", "plain.png"]
    for name in big:
        (folder / name).write_bytes(encode(rng.integers(0, 256, (700, 700, 3), dtype=np.uint8), "PNG"))  # ~1.5 MB
    stack.api.stop()
    stack.env["MAX_UPLOAD_BYTES"] = str(4 * 1024 * 1024)
    stack.start_api()
    stack.start_worker("w1")
    done = run_backfill(stack, str(folder), tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    rows, summary = report(tmp_path)
    by_name = {row["name"]: row for row in rows}
    assert by_name["small.jpg"]["status"] == "succeeded"
    assert by_name["huge.png"]["status"] == "failed" and by_name["huge.png"]["error"]["code"] == "payload_too_large"
    assert all(by_name[name]["status"] == "succeeded" for name in big), rows
    assert summary["jobs"] == 4 and len(job_records(stack)) == 4  # huge.png never became a job


def test_backfill_started_while_the_api_is_down_waits_for_it(stack, tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(photo_jpeg(32, 32, seed=4000 + i))
    stack.api.stop()
    log = tmp_path / "backfill.log"
    with log.open("w") as out:
        script = subprocess.Popen(backfill_command(stack, str(folder), tmp_path, "--batch-size", "1"),
                                  cwd=REPO, env=stack.process_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "API unreachable" in log.read_text(), 60, "the script to find the API down")
        stack.start_api(port=int(stack.api_url.rsplit(":", 1)[1]))  # where the script keeps knocking
        stack.start_worker("w1")
        assert script.wait(timeout=300) == 0, log.read_text()
    finally:
        script.kill()
    rows, summary = report(tmp_path)
    assert summary["by_status"] == {"succeeded": 3}
