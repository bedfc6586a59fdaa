"""The `m2fp` command line against a real system: gunicorn API, Redis, a Celery worker
with the tiny synthetic model and a moto S3 store, each its own process; and the light
client environment that `make client` builds, without the service's stack."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from m2fp_contract.schema import OUTPUTS, TRYON_FILES, TRYON_SIZES, JobStatus, Priority
from common.storage import S3Store
from scripts.imagegen import photo_jpeg
from scripts.processes import REPO, free_port
from scripts.stack import Stack, local_system
from m2fp_client import ApiError, Client, WaitTimedOut
from tests.conftest import S3_KEYS
from tests.harness import HARNESS_APP, SCRIPTED_PARSE_VARIABLE
from tests.harness.scenes import two_people

M2FP = Path(sys.executable).with_name("m2fp")  # the console script `make venv` installs
TWO_PEOPLE = two_people()  # 640x480: a large person 1 on the left, a smaller person 2 on the right


@pytest.fixture(scope="module")
def system(redis_server, tiny_model, s3_endpoint, tmp_path_factory):
    """One API and one worker for the whole module: the commands only read and add jobs.
    Photos of TWO_PEOPLE's size parse to its hand-made parse (tests/harness/scripted_engine.py),
    every other photo to the tiny model's."""
    name = f"cli-{uuid.uuid4().hex[:12]}"
    S3Store(s3_endpoint, S3_KEYS["access_key"], S3_KEYS["secret_key"], name).ensure_bucket()
    base = tmp_path_factory.mktemp("cli-system")
    env = {
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/5",
        "M2FP_MODEL": str(tiny_model), "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1",
        "S3_ENDPOINT": s3_endpoint, "S3_ACCESS_KEY": S3_KEYS["access_key"],
        "S3_SECRET_KEY": S3_KEYS["secret_key"], "S3_BUCKET": name,
        "WEBHOOK_SIGNING_KEY": "cli-signing-key", "WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        SCRIPTED_PARSE_VARIABLE: str(TWO_PEOPLE.write_parse(base, "two-people")),
    }
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    running = Stack(env=env, log_dir=base, worker_app=HARNESS_APP).start_api()
    running.start_worker("cli")
    yield running
    running.stop()


def m2fp(*args: str, cwd: Path, executable: Path = M2FP, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(executable), *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def lines(result: subprocess.CompletedProcess) -> list[list[str]]:
    return [line.split("\t") for line in result.stdout.splitlines()]


def without_links(job: dict) -> dict:
    """A job minus its output links: presigned URLs are signed anew at every answer."""
    return {**job, "result": {**job["result"], "outputs": sorted(job["result"]["outputs"])}}


def test_submit_waits_and_downloads_every_output(system, tmp_path):
    for i, name in enumerate(["a.jpg", "b.jpg"]):
        (tmp_path / name).write_bytes(photo_jpeg(40, 32, seed=9100 + i))
    out = tmp_path / "out"
    done = m2fp("submit", "a.jpg", "b.jpg", "--out", str(out), "--poll-interval", "0.2", cwd=tmp_path,
                M2FP_API_URL=system.api_url, M2FP_API_KEY="a-key-the-api-does-not-check-yet")
    assert done.returncode == 0, done.stderr + system.logs()
    rows = lines(done)
    assert [(row[0], row[2]) for row in rows] == [("a.jpg", "succeeded"), ("b.jpg", "succeeded")]
    for photo, job_id, _, folder in rows:
        assert Path(folder) == out / job_id  # the folder is named after the job, not the photo
        assert sorted(p.name for p in (out / job_id).iterdir()) == sorted(OUTPUTS)
        assert (out / job_id / "colored.png").read_bytes().startswith(b"\x89PNG")
        summary = json.loads((out / job_id / "result.json").read_text())
        assert (summary["width"], summary["height"]) == (40, 32)
        assert system.job(job_id)["status"] == "succeeded"


def test_submit_asks_for_more_outputs_and_downloads_them_in_folders(system, tmp_path):
    (tmp_path / "a.jpg").write_bytes(photo_jpeg(48, 40, seed=9150))
    points = {"people": [{"pose_keypoints_2d": [24, 20, 0.9] * 18}]}
    (tmp_path / "pose.json").write_text(json.dumps(points))
    out = tmp_path / "out"
    done = m2fp("submit", "a.jpg", "--outputs", "masks,keypoints", "--keypoints", "pose.json", "--out", str(out),
                "--poll-interval", "0.2", cwd=tmp_path, M2FP_API_URL=system.api_url)
    assert done.returncode == 0, done.stderr + system.logs()
    [(_, job_id, status, _)] = lines(done)
    job = system.job(job_id)
    assert status == "succeeded" and job["outputs"] == ["keypoints", "masks"]
    written = {str(path.relative_to(out / job_id)) for path in (out / job_id).rglob("*") if path.is_file()}
    assert written == set(job["result"]["outputs"]) and any(name.startswith("masks/") for name in written)
    assert json.loads((out / job_id / "result.json").read_text())["keypoints"]["source"] == "submitted"

    refused = m2fp("submit", "a.jpg", "--outputs", "poses", cwd=tmp_path, M2FP_API_URL=system.api_url)
    assert refused.returncode == 2 and "unknown_output" in refused.stderr, refused.stderr
    two = m2fp("submit", "a.jpg", "a.jpg", "--keypoints", "pose.json", "--outputs", "keypoints", cwd=tmp_path,
               M2FP_API_URL=system.api_url)
    assert two.returncode == 2 and "--keypoints belong to one photo" in two.stderr


def test_submit_asks_for_the_try_on_pack_of_the_person_named_and_writes_it(system, tmp_path):
    scene = TWO_PEOPLE
    (tmp_path / "two.png").write_bytes(scene.photo)
    (tmp_path / "pose.json").write_text(json.dumps(scene.keypoints()))  # both bodies, person 1's first
    out = tmp_path / "out"
    done = m2fp("submit", "two.png", "--outputs", "tryon", "--person", "2", "--keypoints", "pose.json",
                "--out", str(out), "--poll-interval", "0.2", cwd=tmp_path, M2FP_API_URL=system.api_url)
    assert done.returncode == 0, done.stderr + system.logs()
    [(_, job_id, status, folder)] = lines(done)
    job = system.job(job_id)
    assert status == "succeeded" and Path(folder) == out / job_id
    assert job["outputs"] == ["keypoints", "tryon"] and job["person"] == 2  # tryon brings keypoints
    written = {str(path.relative_to(out / job_id)) for path in (out / job_id).rglob("*") if path.is_file()}
    assert written == set(job["result"]["outputs"])
    assert {name for name in written if name.startswith("tryon/")} == {
        f"tryon/{size}/{name}" for size in TRYON_SIZES for name in TRYON_FILES}
    summary = json.loads((out / job_id / "result.json").read_text())
    assert summary["tryon"]["person"] == 2 and summary["tryon"]["absent_reason"] is None
    # person 2's pack: its parse-agnostic map holds person 2's labels and no one else's
    parse = np.asarray(Image.open(out / job_id / "tryon" / "photo" / "parse_agnostic.png"))
    assert (parse[scene.persons == 2] > 0).any() and not parse[scene.persons != 2].any()


def test_submit_names_a_webhook_and_webhook_secret_prints_the_tenants_secret(system, tmp_path):
    from common.webhooks import tenant_secret

    (tmp_path / "w.jpg").write_bytes(photo_jpeg(32, 32, seed=9150))
    env = {"M2FP_API_URL": system.api_url}
    done = m2fp("submit", "w.jpg", "--webhook", "http://127.0.0.1:9/hook", "--webhook-event", "running",
                "--webhook-event", "succeeded", "--labels", "lip", "--labels-format", "palette", cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    job = system.job(lines(done)[0][1])
    assert (job["webhook"]["url"], job["webhook"]["events"]) == ("http://127.0.0.1:9/hook", ["running", "succeeded"])
    assert (job["labels"], job["labels_format"]) == ("lip", "palette")
    refused = m2fp("submit", "w.jpg", "--webhook", "http://hooks.example.com/hook", cwd=tmp_path, **env)
    assert refused.returncode == 2 and "invalid_webhook" in refused.stderr and refused.stdout == ""
    secret = m2fp("webhook-secret", cwd=tmp_path, **env)
    assert secret.returncode == 0 and secret.stdout.strip() == tenant_secret("cli-signing-key", "default")


def test_status_prints_jobs_and_get_downloads_a_finished_one(system, tmp_path):
    (tmp_path / "p.jpg").write_bytes(photo_jpeg(32, 32, seed=9200))
    done = m2fp("submit", "p.jpg", "--wait", "--poll-interval", "0.2", "--api-url", system.api_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [[_, job_id, status, _]] = lines(done)
    assert status == "succeeded"

    unknown = "A" * 22
    shown = m2fp("status", job_id, unknown, "--api-url", system.api_url, cwd=tmp_path)
    assert shown.returncode == 1, shown.stderr  # one id is unknown
    decoder, text, jobs = json.JSONDecoder(), shown.stdout.strip(), []
    while text:
        job, end = decoder.raw_decode(text)
        jobs.append(job)
        text = text[end:].strip()
    assert without_links(jobs[0]) == without_links(system.job(job_id))  # what the API says of it
    assert jobs[1] == {"id": unknown, "status": "not_found"}

    got = m2fp("get", job_id, "--out", str(tmp_path / "got"), "--api-url", system.api_url, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in (tmp_path / "got" / job_id).iterdir()) == sorted(OUTPUTS)
    assert got.stdout.split() == [str(tmp_path / "got" / job_id / name) for name in OUTPUTS]

    missing = m2fp("get", unknown, "--out", str(tmp_path / "none"), "--api-url", system.api_url, cwd=tmp_path)
    assert missing.returncode == 2 and "not_found" in missing.stderr

    late = m2fp("cancel", job_id, unknown, "--api-url", system.api_url, cwd=tmp_path)
    assert late.returncode == 1, late.stderr  # one ended already, one does not exist
    assert [line[:2] for line in lines(late)] == [[job_id, "not_cancelable"], [unknown, "not_found"]]
    assert system.job(job_id)["status"] == "succeeded"


def test_a_bad_photo_gets_the_api_error_code_and_a_failing_exit(system, tmp_path):
    (tmp_path / "good.jpg").write_bytes(photo_jpeg(32, 32, seed=9300))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    done = m2fp("submit", "good.jpg", "broken.jpg", "--wait", "--poll-interval", "0.2", cwd=tmp_path,
                M2FP_API_URL=system.api_url)
    assert done.returncode == 1, done.stderr
    good, broken = lines(done)
    assert good[2] == "succeeded"
    assert broken[:3] == ["broken.jpg", "-", "refused"] and broken[3].startswith("invalid_image: ")


def test_api_url_is_taken_before_or_after_the_command(system, tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"  # M2FP_API_URL: only the option can reach the API
    unknown = "A" * 22
    for args in (["--api-url", system.api_url, "status", unknown], ["status", unknown, "--api-url", system.api_url],
                 ["--api-url", nowhere, "status", unknown, "--api-url", system.api_url]):  # the command's own wins
        shown = m2fp(*args, cwd=tmp_path, M2FP_API_URL=nowhere)
        assert shown.returncode == 1, (args, shown.stderr)  # reached the API, which does not know the id
        assert json.loads(shown.stdout) == {"id": unknown, "status": "not_found"}
    lost = m2fp("--api-url", nowhere, "status", unknown, cwd=tmp_path, M2FP_API_URL=system.api_url)
    assert lost.returncode == 2 and f"cannot reach {nowhere}" in lost.stderr


def test_an_unreachable_api_is_named_with_the_fix(tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    for args, env in [(["--api-url", nowhere], {}), ([], {"M2FP_API_URL": nowhere})]:
        result = m2fp("status", "A" * 22, *args, cwd=tmp_path, **env)
        assert result.returncode == 2
        assert f"cannot reach {nowhere}" in result.stderr and "make run" in result.stderr
        assert "--api-url" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def no_worker(tmp_path_factory):
    """A real API and Redis with no worker: every job stays queued."""
    with local_system(tmp_path_factory.mktemp("no-worker")) as stack:
        yield stack


def test_waiting_gives_up_at_the_timeout_and_the_job_goes_on(no_worker, tmp_path):
    (tmp_path / "p.jpg").write_bytes(photo_jpeg(32, 32, seed=9600))
    late = m2fp("submit", "p.jpg", "--wait", "--timeout", "1", "--poll-interval", "0.2",
                "--api-url", no_worker.api_url, cwd=tmp_path)
    assert late.returncode == 3, late.stderr
    [[photo, job_id, status, detail]] = lines(late)
    assert (photo, status, detail) == ("p.jpg", "queued", "")
    assert f"1 job(s) had not ended after 1 s; they go on: m2fp status {job_id}" in late.stderr
    assert no_worker.job(job_id)["status"] == "queued"  # not canceled

    got = m2fp("get", job_id, "--out", str(tmp_path / "got"), "--wait", "--timeout", "0.5", "--poll-interval", "0.2",
               "--api-url", no_worker.api_url, cwd=tmp_path)
    assert got.returncode == 3 and f"m2fp status {job_id}" in got.stderr, got.stderr
    assert not (tmp_path / "got").exists()

    with pytest.raises(WaitTimedOut) as raised:
        Client(no_worker.api_url).wait([job_id, "A" * 22], poll_interval=0.2, timeout=0.5)
    assert raised.value.waiting == [job_id]
    assert [(job.id, getattr(job.status, "value", job.status)) for job in raised.value.jobs] == [
        (job_id, "queued"), ("A" * 22, "not_found")]


def test_waiting_on_an_api_that_never_answers_ends_at_the_timeout(tmp_path):
    # Unreachable counts as transient (the service may be restarting): without a deadline
    # the client would poll it for ever.
    nowhere = Client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(WaitTimedOut) as raised:
        nowhere.wait(["A" * 22], poll_interval=0.2, timeout=0.5)
    assert (raised.value.waiting, raised.value.jobs) == (["A" * 22], [])


def test_waiting_on_an_api_that_takes_the_connection_and_never_answers_ends_at_the_timeout():
    # The kernel completes the handshake on a listening socket nobody serves: each poll
    # would wait the client's own request timeout (an hour here) without the deadline;
    # with it, the last poll waits LAST_POLL_SECONDS at most.
    with socket.create_server(("127.0.0.1", 0)) as hung:
        client = Client(f"http://127.0.0.1:{hung.getsockname()[1]}", timeout=3600)
        with pytest.raises(WaitTimedOut) as raised:
            client.wait(["A" * 22], poll_interval=0.2, timeout=0.5)
    assert (raised.value.waiting, raised.value.jobs) == (["A" * 22], [])


def test_the_client_submits_by_reference_and_reads_typed_jobs(system):
    bucket = system.env["S3_BUCKET"]
    S3Store(system.env["S3_ENDPOINT"], S3_KEYS["access_key"], S3_KEYS["secret_key"], bucket).put(
        "refs/r.jpg", photo_jpeg(32, 32, seed=9500), "image/jpeg")
    client = Client(system.api_url)
    job = client.submit_source(f"s3://{bucket}/refs/r.jpg", Priority.BACKFILL)
    assert job.input.source == f"s3://{bucket}/refs/r.jpg" and job.priority is Priority.BACKFILL
    [done] = client.wait([job.id], poll_interval=0.2)
    assert done.status is JobStatus.SUCCEEDED and set(done.result.keys) == set(OUTPUTS)
    with pytest.raises(ApiError) as refused:
        client.submit_source(f"s3://{bucket}/refs/missing.jpg")
    assert (refused.value.status, refused.value.code) == (404, "source_not_found")


def test_the_light_environment_runs_the_client_without_the_service_stack(system, tmp_path):
    venv = tmp_path / "venv"
    build = subprocess.run(["make", "client", f"CLIENT_VENV={venv}"], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    outside = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path))}  # no PYTHONPATH
    # ... and no top-level name but the project's own (a generic ``common`` would clash).
    for module in ("numpy", "celery", "torch", "redis", "PIL", "common"):
        probe = subprocess.run([str(venv / "bin/python"), "-c", f"import {module}"], cwd=tmp_path, env=outside,
                               capture_output=True, text=True)
        assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr, (module, probe.stderr)
    light = venv / "bin/m2fp"
    assert subprocess.run([str(light), "--help"], cwd=tmp_path, env=outside).returncode == 0

    (tmp_path / "q.jpg").write_bytes(photo_jpeg(32, 32, seed=9400))
    sent = subprocess.run([str(light), "submit", "q.jpg", "--api-url", system.api_url], cwd=tmp_path, env=outside,
                          capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    [[_, job_id, _]] = [row[:3] for row in lines(sent)]
    shown = subprocess.run([str(light), "status", job_id, "--api-url", system.api_url], cwd=tmp_path, env=outside,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == job_id, shown.stderr

    # An S3 listing for a backfill by reference, with the service's S3_* variables.
    bucket = system.env["S3_BUCKET"]
    S3Store(system.env["S3_ENDPOINT"], S3_KEYS["access_key"], S3_KEYS["secret_key"], bucket).put(
        "light/one.jpg", photo_jpeg(32, 32, seed=9401), "image/jpeg")
    listed = subprocess.run([str(light), "backfill", f"s3://{bucket}/light/", "--dry-run"], cwd=tmp_path,
                            env={**outside, **{k: v for k, v in system.env.items() if k.startswith("S3_")}},
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.split() == ["light/one.jpg"], listed.stderr
