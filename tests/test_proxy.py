"""Behind a reverse proxy: a real nginx on loopback in front of the API under gunicorn.

nginx plays a TLS-terminating proxy serving the API at https://parse.example.test/m2fp/
(it forwards the scheme, host, port and prefix). With TRUSTED_PROXIES=1 every link the
API writes (a job's own, its outputs', the base a webhook body's links start from)
names that address; without it forwarded headers are ignored, whoever sends them.
"""
from __future__ import annotations

import pytest
import requests

from common.jobs import JobResult, output_key
from common.services import Services
from common.settings import Settings
from scripts.imagegen import photo_jpeg
from scripts.stack import Stack
from tests.harness.nginx import Nginx

PUBLIC_HOST = "parse.example.test"
PUBLIC_ROOT = f"https://{PUBLIC_HOST}/m2fp/"
SPOOF = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http", "X-Forwarded-Port": "8080",
         "X-Forwarded-Prefix": "/elsewhere", "X-Forwarded-For": "203.0.113.9"}


def api_env(redis_url: str, tmp_path, **env: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "LOCAL_STORE_DIR": str(tmp_path / "store"), "API_WORKERS": "1",
            "API_THREADS": "2", "WEBHOOK_SIGNING_KEY": "proxy-test-signing-key",
            "WEBHOOK_ALLOW_HOSTS": "127.0.0.1", **env}


@pytest.fixture()
def system(redis_url, tmp_path, request):
    """The API (TRUSTED_PROXIES as the test's parameter) behind nginx; its services, to
    play the worker's part."""
    env = api_env(redis_url, tmp_path, TRUSTED_PROXIES=str(request.param))
    stack = Stack(env=env, log_dir=tmp_path).start_api()
    proxy = Nginx(tmp_path / "nginx", int(stack.api_url.rsplit(":", 1)[1])).start()
    services = Services.create(Settings(redis_url=redis_url, local_store_dir=tmp_path / "store"))
    try:
        yield stack, proxy, services
    finally:
        proxy.stop()
        stack.stop()


def through_proxy(proxy: Nginx, method: str, path: str, **kwargs) -> requests.Response:
    """A request to nginx as a client that resolved parse.example.test to it would send."""
    headers = {"Host": PUBLIC_HOST, **kwargs.pop("headers", {})}
    return requests.request(method, proxy.url(path), headers=headers, timeout=30, **kwargs)


def submit(proxy: Nginx, seed: int, **kwargs) -> requests.Response:
    return through_proxy(proxy, "POST", "/v1/jobs", files={"image": ("a.jpg", photo_jpeg(64, 48, seed=seed))},
                         **kwargs)


def finish(services: Services, job_id: str) -> bytes:
    """What a worker does when a job succeeds: its output stored, its record done."""
    data = b"\x89PNG the output"
    services.jobs.start(job_id, worker="w", message_id="m")
    services.storage.put(output_key(job_id, "colored.png"), data, "image/png")
    services.jobs.succeed(job_id, JobResult(outputs={"colored.png": output_key(job_id, "colored.png")},
                                            summary={"persons": 1}))
    return data


@pytest.mark.parametrize("system", [1], indirect=True)
def test_links_name_the_address_the_client_used_through_a_trusted_proxy(system):
    stack, proxy, services = system
    hook = "http://127.0.0.1:9/hook"
    submitted = submit(proxy, seed=1, data={"webhook": hook})
    assert submitted.status_code == 202, submitted.text + stack.logs()
    job = submitted.json()
    assert job["links"]["self"] == f"{PUBLIC_ROOT}v1/jobs/{job['id']}"
    assert submitted.headers["Location"] == f"/m2fp/v1/jobs/{job['id']}"  # the path the client can follow
    # The base a webhook delivery's links start from, kept with the job for the delivery worker.
    assert services.jobs.get(job["id"]).webhook.links_base == PUBLIC_ROOT

    data = finish(services, job["id"])
    polled = through_proxy(proxy, "GET", f"/v1/jobs/{job['id']}").json()
    link = polled["result"]["outputs"]["colored.png"]
    assert link == f"{PUBLIC_ROOT}v1/jobs/{job['id']}/outputs/colored.png"
    download = through_proxy(proxy, "GET", link.removeprefix(f"https://{PUBLIC_HOST}/m2fp"))
    assert download.status_code == 200 and download.content == data

    # nginx replaces the forwarded headers a client sends itself: they change nothing.
    spoofed = submit(proxy, seed=2, headers=SPOOF)
    assert spoofed.json()["links"]["self"] == f"{PUBLIC_ROOT}v1/jobs/{spoofed.json()['id']}"
    batch = through_proxy(proxy, "POST", "/v1/jobs/batch", headers=SPOOF,
                          files=[("image", ("b.jpg", photo_jpeg(64, 48, seed=3)))])
    assert batch.json()["items"][0]["job"]["links"]["self"].startswith(PUBLIC_ROOT)


@pytest.mark.parametrize("system", [0], indirect=True)
def test_without_trusted_proxies_forwarded_headers_are_ignored(system):
    stack, proxy, services = system
    internal = f"{stack.api_url}/v1/jobs/"
    behind = submit(proxy, seed=4).json()
    assert behind["links"]["self"] == f"http://{PUBLIC_HOST}/v1/jobs/{behind['id']}"  # nginx's Host, nothing more

    hook = "http://127.0.0.1:9/hook"
    direct = requests.post(f"{stack.api_url}/v1/jobs", headers=SPOOF, data={"webhook": hook},
                           files={"image": ("a.jpg", photo_jpeg(64, 48, seed=5))}, timeout=30)
    job = direct.json()
    assert job["links"]["self"] == f"{internal}{job['id']}" and direct.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert services.jobs.get(job["id"]).webhook.links_base == f"{stack.api_url}/"
    finish(services, job["id"])
    polled = requests.get(f"{internal}{job['id']}", headers=SPOOF, timeout=30).json()
    assert polled["result"]["outputs"]["colored.png"] == f"{internal}{job['id']}/outputs/colored.png"
