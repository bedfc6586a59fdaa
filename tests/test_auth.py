"""API keys and tenants on the real Redis (and S3 endpoint for references): 401s, every
job route answering another tenant's ids exactly as unknown ones, dedupe per tenant,
reference prefixes per key, and the per-key submission rate."""
import dataclasses
import hashlib
import io

import pytest

from api.app import create_app
from api.auth import KeyRing
from common.jobs import JobResult, output_key
from m2fp_contract.schema import OUTPUTS
from common.services import Services
from common.settings import Settings
from scripts.imagegen import photo_jpeg
from tests.conftest import S3_KEYS
from tests.harness.queues import RecordingQueue

ALICE, BOB, ROOT, SLOW = "alice-key-1", "bob-key-2", "root-key-3", "slow-key-4"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture()
def keys_file(tmp_path, s3_store):
    path = tmp_path / "keys"
    path.write_text(f"# tenant sha256 [options]\n"
                    f"acme {sha(ROOT)} admin\n"
                    f"slowco {sha(SLOW)} rate=2 s3://{s3_store.bucket}/slowco/  # a limited key\n")
    return path


@pytest.fixture()
def app(settings, keys_file, s3_endpoint, s3_store):
    settings = Settings(**{**settings.model_dump(), "api_keys": f"alice:{ALICE}, bob:{BOB}",
                           "api_keys_file": keys_file, "s3_endpoint": s3_endpoint, "s3_bucket": s3_store.bucket,
                           "s3_access_key": S3_KEYS["access_key"], "s3_secret_key": S3_KEYS["secret_key"]})
    services = Services.create(settings)
    return create_app(services=dataclasses.replace(services, storage=s3_store,
                                                   queue=RecordingQueue(services.queue, lambda *_: None)))


@pytest.fixture()
def client(app):
    return app.test_client()


def as_(key: str, header: str = "bearer") -> dict:
    return {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}


def upload(client, key: str, data: bytes, header: str = "bearer"):
    return client.post("/v1/jobs", data={"image": (io.BytesIO(data), "a.jpg")}, content_type="multipart/form-data",
                       headers=as_(key, header))


@pytest.mark.parametrize("method, path", [("post", "/v1/jobs"), ("post", "/v1/jobs/batch"), ("get", "/v1/jobs?ids=x"),
                                          ("get", "/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA"),
                                          ("get", "/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA/outputs/labels.png"),
                                          ("post", "/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA/cancel")])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
                                     {"Authorization": f"Basic {ALICE}"}], ids=["none", "bearer", "header", "basic"])
def test_job_routes_need_a_valid_key(client, method, path, headers):
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="m2fp"'


def test_probes_and_the_contract_stay_open(client):
    for path in ("/healthz", "/readyz", "/v1/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


def test_another_tenants_job_answers_exactly_like_an_unknown_one(client, app):
    """For every route that takes a job id: the same status, body (but for the id it
    echoes) and headers as an id nobody has, so nothing tells the ids apart; and a
    foreign cancel changes nothing."""
    job = upload(client, ALICE, photo_jpeg(48, 32, seed=1)).json
    services = app.extensions["m2fp"]
    services.jobs.start(job["id"], worker="w", message_id="m")
    services.storage.put(output_key(job["id"], "labels.png"), b"\x89PNG", "image/png")
    services.jobs.succeed(job["id"], JobResult(outputs={"labels.png": output_key(job["id"], "labels.png")},
                                               summary={}))
    queued = upload(client, ALICE, photo_jpeg(48, 32, seed=5)).json  # cancelable, unlike the first
    unknown = "AAAAAAAAAAAAAAAAAAAAAA"
    routes = [("get", "/v1/jobs/{}", 200), ("get", "/v1/jobs/{}/outputs/labels.png", 200),
              ("get", "/v1/jobs?ids={}", 200), ("post", "/v1/jobs/{}/cancel", 409)]
    for job_id in (job["id"], queued["id"]):
        for method, path, _ in routes:
            theirs = getattr(client, method)(path.format(job_id), headers=as_(BOB))
            missing = getattr(client, method)(path.format(unknown), headers=as_(BOB))
            where = f"{method} {path} ({job_id})"
            assert theirs.status_code == missing.status_code, where
            assert theirs.get_data(as_text=True).replace(job_id, unknown) == missing.get_data(as_text=True), where
            assert dict(theirs.headers) == dict(missing.headers), where
    assert services.jobs.get(queued["id"]).status.value == "queued"  # bob's cancel did nothing
    for method, path, status in routes:
        assert getattr(client, method)(path.format(job["id"]), headers=as_(ALICE)).status_code == status, path
    polled = client.get(f"/v1/jobs?ids={job['id']},{unknown}", headers=as_(BOB)).json["jobs"]
    assert polled == [{"id": job["id"], "status": "not_found"}, {"id": unknown, "status": "not_found"}]
    assert client.get(f"/v1/jobs?ids={job['id']}", headers=as_(ALICE)).json["jobs"][0]["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{job['id']}", headers=as_(ROOT)).status_code == 200  # an admin key reads all


def test_the_same_bytes_from_two_tenants_are_two_jobs(client):
    data = photo_jpeg(48, 32, seed=2)
    alice, bob = upload(client, ALICE, data), upload(client, BOB, data, header="x-api-key")
    assert (alice.status_code, bob.status_code) == (202, 202)
    assert alice.json["id"] != bob.json["id"] and not alice.json["deduplicated"] and not bob.json["deduplicated"]
    again = upload(client, BOB, data)
    assert again.status_code == 200 and again.json["id"] == bob.json["id"]


def test_a_key_may_be_limited_to_reference_prefixes(client, s3_store):
    for key in ("slowco/a.jpg", "other/a.jpg"):
        s3_store.put(key, photo_jpeg(40, 30, seed=3), "image/jpeg")
    inside = client.post("/v1/jobs", json={"source": f"s3://{s3_store.bucket}/slowco/a.jpg"}, headers=as_(SLOW))
    outside = client.post("/v1/jobs", json={"source": f"s3://{s3_store.bucket}/other/a.jpg"}, headers=as_(SLOW))
    assert inside.status_code == 202
    assert outside.status_code == 403 and outside.json["error"]["code"] == "source_forbidden"
    assert client.post("/v1/jobs", json={"source": f"s3://{s3_store.bucket}/other/a.jpg"},
                       headers=as_(ALICE)).status_code == 202  # alice's key names no prefix


def test_a_key_over_its_rate_gets_429_with_retry_after(client):
    answers = [upload(client, SLOW, photo_jpeg(32, 32, seed=10 + i)) for i in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].json["error"]["code"] == "rate_limited" and int(answers[2].headers["Retry-After"]) >= 1
    assert upload(client, ALICE, photo_jpeg(32, 32, seed=20)).status_code == 202  # other keys are unaffected


def batch(client, key: str, count: int, seed: int):
    return client.post("/v1/jobs/batch", content_type="multipart/form-data", headers=as_(key), data={
        "image": [(io.BytesIO(photo_jpeg(32, 32, seed=seed + i)), f"{i}.jpg") for i in range(count)]})


def test_a_batch_costs_a_token_per_item_and_one_that_can_never_fit_says_so(client):
    """rate=2: a batch of 3 could never be admitted (413, nothing spent); a batch of 2
    spends the whole minute, so the next photo waits."""
    never = batch(client, SLOW, 3, seed=50)
    assert never.status_code == 413 and never.json["error"]["code"] == "batch_too_large"
    assert "at most 2" in never.json["error"]["message"]
    full = batch(client, SLOW, 2, seed=60)
    assert full.status_code == 200 and [item["status"] for item in full.json["items"]] == [202, 202]
    spent = upload(client, SLOW, photo_jpeg(32, 32, seed=70))
    assert spent.status_code == 429 and spent.json["error"]["code"] == "rate_limited"
    assert int(spent.headers["Retry-After"]) >= 1
    assert batch(client, ALICE, 3, seed=80).status_code == 200  # no rate configured for alice: unlimited


@pytest.mark.parametrize("line, fix", [
    ("acme not-a-hash", "printf %s KEY | sha256sum"),
    (f"acme {'0' * 64} superuser", "unknown option 'superuser'"),
])
def test_a_bad_keys_file_line_names_the_fix(settings, tmp_path, line, fix):
    path = tmp_path / "keys"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=fix.replace("|", r"\|").replace("%", "%")):
        KeyRing.from_settings(settings.model_copy(update={"api_keys_file": path}))


@pytest.mark.parametrize("keys", ["alice\n:alice-key", "ali ce:alice-key", "../x:alice-key", ":alice-key", "alice:"])
def test_a_tenant_name_that_could_reach_a_log_line_or_a_key_prefix_is_refused(settings, keys):
    """The tenant names content-index keys and log lines: a newline (which the old $-anchored
    match let through), a space or a path is refused at start, never stored."""
    with pytest.raises(ValueError, match="API_KEYS takes comma-separated tenant:key pairs"):
        KeyRing.from_settings(settings.model_copy(update={"api_keys": keys}))


@pytest.mark.parametrize("setting, value, fix", [
    ("api_keys_file", "keys", "unset API_KEYS_FILE to run open"),
    ("api_keys", " , ", "unset it to run open"),
])
def test_a_key_setting_that_names_no_key_refuses_to_start(settings, tmp_path, setting, value, fix):
    """Set but empty (a file of comments, a list of commas): the operator meant to close
    the service, so it must not run open."""
    (tmp_path / "keys").write_text("# tenant sha256 [options]\n\n")
    configured = settings.model_copy(update={setting: tmp_path / value if setting == "api_keys_file" else value})
    with pytest.raises(ValueError, match=fix):
        KeyRing.from_settings(configured)
    with pytest.raises(ValueError, match=fix):
        create_app(configured)


def test_gunicorn_says_once_that_it_runs_open_and_refuses_an_empty_keys_file(redis_server, tmp_path):
    """The open-service warning comes from gunicorn's master, before any worker boots,
    once for all of them; a keys file without keys stops it before a worker starts."""
    from scripts.stack import Stack

    env = {"REDIS_URL": redis_server.url, "LOCAL_STORE_DIR": str(tmp_path / "store")}
    stack = Stack(env=env, log_dir=tmp_path).start_api()  # two workers; one answered /healthz
    stack.stop()
    log = stack.api.log_text()
    assert log.count("no API keys configured") == 1, log
    assert log.index("no API keys configured") < log.index("Booting worker"), log

    (tmp_path / "keys").write_text("# nobody yet\n")
    closed = Stack(env={**env, "API_KEYS_FILE": str(tmp_path / "keys")}, log_dir=tmp_path / "closed")
    (tmp_path / "closed").mkdir()
    with pytest.raises(RuntimeError, match="holds no key") as exited:
        closed.start_api()
    assert "Booting worker" not in str(exited.value)


def test_keys_through_the_real_system_and_the_cli(redis_server, tiny_model, tmp_path):
    """gunicorn reads API_KEYS from its environment; m2fp sends M2FP_API_KEY; the local
    store's output route serves only the owner."""
    import subprocess
    import sys
    from pathlib import Path

    import requests

    from scripts.stack import local_system

    m2fp = Path(sys.executable).with_name("m2fp")
    (tmp_path / "photo.jpg").write_bytes(photo_jpeg(64, 48, seed=30))
    env = {"M2FP_MODEL": str(tiny_model), "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1",
           "API_KEYS": f"alice:{ALICE},bob:{BOB}"}
    with local_system(tmp_path / "system", **env) as stack:
        stack.start_worker("auth")

        def run(*args: str, key: str = "") -> subprocess.CompletedProcess:
            return subprocess.run([str(m2fp), *args, "--api-url", stack.api_url], cwd=tmp_path, text=True,
                                  capture_output=True, timeout=300,
                                  env={**stack.process_env(), "M2FP_API_KEY": key})

        submitted = run("submit", "photo.jpg", "--out", "out", key=ALICE)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.split("\t")[1]
        assert sorted(p.name for p in (tmp_path / "out" / job_id).iterdir()) == sorted(OUTPUTS)
        assert run("status", job_id, key=BOB).returncode == 1  # bob: as if it did not exist
        # The local store's output route: the owner's key gets the file; another tenant's
        # gets exactly what an unknown job's output answers.
        output = f"{stack.api_url}/v1/jobs/{{}}/outputs/labels.png"
        unknown = "AAAAAAAAAAAAAAAAAAAAAA"
        mine = requests.get(output.format(job_id), headers=as_(ALICE), timeout=30)
        assert mine.status_code == 200 and mine.content.startswith(b"\x89PNG")
        theirs = requests.get(output.format(job_id), headers=as_(BOB), timeout=30)
        missing = requests.get(output.format(unknown), headers=as_(BOB), timeout=30)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.text.replace(job_id, unknown) == missing.text
        assert {k: v for k, v in theirs.headers.items() if k != "Date"} == \
            {k: v for k, v in missing.headers.items() if k != "Date"}
        refused = run("status", job_id)
        assert refused.returncode == 2 and "unauthorized" in refused.stderr
        log = stack.api.log_text()
        assert "no API keys configured" not in log and ALICE not in log and BOB not in log


def test_cancel_of_queued_finished_and_other_tenants_jobs(client):
    data = photo_jpeg(40, 40, seed=40)
    job = upload(client, ALICE, data).json
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=as_(BOB)).status_code == 404
    canceled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=as_(ALICE))
    assert canceled.status_code == 200 and canceled.json["status"] == "canceled" and canceled.json["finished_at"]
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=as_(ALICE))
    assert again.status_code == 409 and again.json["error"]["code"] == "not_cancelable"
    resubmitted = upload(client, ALICE, data)
    assert resubmitted.status_code == 202 and resubmitted.json["id"] != job["id"]
