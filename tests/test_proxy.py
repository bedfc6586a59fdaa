"""Behind a reverse proxy: a real nginx on loopback in front of the API under gunicorn.

nginx plays a TLS-terminating proxy serving the API at https://parse.example.test/m2fp/
(it forwards the scheme, host, port and prefix). With TRUSTED_PROXIES=1 every link the
API writes (a job's own, its outputs', the base a webhook body's links start from)
names that address; without it forwarded headers are ignored, whoever sends them. The
web page at `/` and the docs page at `/docs` work there too: every URL they name (their
files, the API the page calls, the OpenAPI document) stays under the prefix, also when
the page is opened at the prefix without its trailing slash.
"""
from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest
import requests
from PIL import Image
from playwright.sync_api import expect

from common.jobs import JobResult, output_key
from common.services import Services
from common.settings import Settings
from api.app import create_app
from scripts.imagegen import encode, photo_jpeg
from scripts.stack import Stack
from tests.harness.nginx import Nginx
from tests.test_page import browser, tabs  # noqa: F401 (the page test's headless Chromium and its tabs, fixtures)

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


# ---- the web page and the docs page under the proxy's prefix ----------------------------

class _References(HTMLParser):
    """Every URL a page names in its markup (the <base> apart), as (tag, URL)."""

    ATTRIBUTES = {"link": "href", "script": "src", "img": "src", "a": "href"}

    def __init__(self) -> None:
        super().__init__()
        self.base: str | None = None
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "base":
            self.base = attrs["href"]
        elif attrs.get(self.ATTRIBUTES.get(tag, "")):
            self.urls.append((tag, attrs[self.ATTRIBUTES[tag]]))


def get_url(url: str) -> requests.Response:
    """GET an absolute URL (one a page names, resolved) from nginx, as the public host's client."""
    return requests.get(url, headers={"Host": PUBLIC_HOST}, timeout=30)


# The page's own address, with the prefix's slash and without.
PAGE_PATHS = ["/", ""]


@pytest.mark.parametrize("system", [1], indirect=True)
def test_the_page_names_files_and_links_that_answer_under_the_prefix(system):
    stack, proxy, _ = system
    for page_path in PAGE_PATHS:
        page_url = proxy.url(page_path)
        page = get_url(page_url)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html"), page_url
        found = _References()
        found.feed(page.text)
        base = urljoin(page_url, found.base or "")
        kinds = {tag for tag, _ in found.urls}
        assert {"link", "script", "a"} <= kinds, found.urls  # its stylesheet, icon, script and docs link
        for tag, reference in found.urls:
            url = urljoin(base, reference)
            assert url.startswith(proxy.url("/")), f"{page_url}: <{tag}> {reference!r} leaves the prefix: {url}"
            answer = get_url(url)
            assert answer.status_code == 200, f"{page_url}: <{tag}> {reference!r} -> {url}: {answer.status_code}"
        # The script's API calls are relative to that base too (the browser test drives them).
        script = get_url(urljoin(base, "static/app.js")).text
        assert not re.findall(r"""(?:fetch|api|apiJson)\(\s*["'`]/""", script), "the page calls the API at /"


@pytest.mark.parametrize("system", [1], indirect=True)
def test_the_docs_page_names_a_document_and_servers_under_the_prefix(system):
    stack, proxy, _ = system
    docs_url = proxy.url("/docs")
    page = get_url(docs_url)
    assert page.status_code == 200, page.text
    named = re.search(r"""SwaggerUIBundle\(\{\s*url: ("[^"]*"|'[^']*'),""", page.text)
    assert named, "the docs page names no document"
    document_url = urljoin(docs_url, json.loads('"' + named.group(1)[1:-1] + '"'))
    assert document_url == proxy.url("/v1/openapi.json")
    document = get_url(document_url)
    assert document.status_code == 200 and document.json()["openapi"].startswith("3."), document.text
    # Swagger UI's "Try it out" calls the document's first server (OpenAPI's default: "/",
    # resolved against the document's URL): the prefix, not the host's root.
    server = document.json().get("servers", [{"url": "/"}])[0]["url"]
    root = urljoin(document_url, server)
    assert root == proxy.url(""), root
    assert get_url(root + "/healthz").status_code == 200


@pytest.mark.parametrize("system", [1], indirect=True)
@pytest.mark.parametrize("page_path", PAGE_PATHS)
def test_a_photo_sent_from_the_page_through_the_proxy_is_queued_polled_and_shown(system, tabs, page_path):
    stack, proxy, services = system
    tab = tabs(proxy.url(""))
    tab.page.goto(proxy.url(page_path))
    expect(tab.page.locator("#drop")).to_be_visible()
    card = tab.upload("behind.jpg", photo_jpeg(64, 48, seed=6))
    # Queued: its POST went through nginx (no worker runs in this test).
    expect(card).to_have_attribute("data-status", "queued")
    job_id = card.get_attribute("data-job-id")
    assert services.jobs.get(job_id).status == "queued"

    # The worker's part: the job succeeds with one output. The page learns it only by
    # polling, and shows the output it then downloads through the API.
    services.jobs.start(job_id, worker="w", message_id="m")
    colored = encode(Image.new("RGB", (64, 48), (200, 40, 40)), "PNG")
    services.storage.put(output_key(job_id, "colored.png"), colored, "image/png")
    services.jobs.succeed(job_id, JobResult(outputs={"colored.png": output_key(job_id, "colored.png")},
                                            summary={"persons": 0, "classes": []}))
    expect(card).to_have_attribute("data-status", "succeeded")
    expect(card).to_have_attribute("data-ready", "true")
    expect(card.locator(".downloads a")).to_have_text(["colored.png"])
    colored = card.locator("img.colored")
    tab.page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=colored.element_handle())
    assert colored.evaluate("i => i.naturalWidth") == 64

    root = proxy.url("/")
    assert f"{root}v1/jobs?ids={job_id}" in tab.requests and f"{root}v1/jobs/{job_id}/outputs/colored.png" in (
        tab.requests), tab.requests
    assert [u for u in tab.requests if not u.startswith((root, "blob:", "data:")) and u != proxy.url("")] == []
    assert tab.errors == []


@pytest.mark.parametrize("forwarded, prefix", [
    ("/m2fp", "/m2fp"), ("/m2fp/", "/m2fp"), ("//m2fp//v2", "/m2fp/v2"),
    # Each would make a protocol-relative URL, another host, of the page's base and Location.
    ("//evil.example", "/evil.example"), ("/\\evil.example", ""), ("/%5Cevil.example", ""), ("/a/../..", ""),
    ("/\u00e9vil", ""), ('/"><script>', ""),
])
def test_a_forwarded_prefix_is_used_only_as_plain_path_segments(redis_url, tmp_path, forwarded, prefix):
    """A proxy mounted at / forwards the client's own X-Forwarded-Prefix, if it sent one."""
    settings = Settings(redis_url=redis_url, local_store_dir=tmp_path / "store", trusted_proxies=1)
    client = create_app(settings).test_client()
    headers = {"X-Forwarded-Prefix": forwarded}
    base = re.search(r'<base href="([^"]*)">', client.get("/", headers=headers).get_data(as_text=True)).group(1)
    docs = re.search(r"url: (\"[^\"]*\")", client.get("/docs", headers=headers).get_data(as_text=True)).group(1)
    created = client.post("/v1/jobs", headers=headers, data={"image": (io.BytesIO(photo_jpeg(40, 30)), "a.jpg")})
    assert (base, json.loads(docs)) == (prefix + "/", prefix + "/v1/openapi.json")
    assert created.headers["Location"] == f"{prefix}/v1/jobs/{created.get_json()['id']}"
    assert created.get_json()["links"]["self"].startswith(f"http://localhost{prefix}/v1/jobs/")
