"""Webhooks: the URL policy (SSRF guard), per-tenant signing verified by the Standard
Webhooks reference library, the job store's events, single delivery attempts against a
real receiver (http and https with a private CA), the API's checks, and the whole path
through the real stack: gunicorn, Redis, a model worker and the delivery worker."""
import datetime
import io
import json
import socket
import ssl
from typing import Callable

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from api.app import create_app
from m2fp_contract.errors import ErrorCode, ServiceError
from common.jobs import Delivery, InputInfo, JobResult, Priority, Webhook
from common.job_store import JobStore
from common.redis_connection import redis_client
from m2fp_contract.schema import WebhookEvent
from common.settings import Settings
from common.webhooks import DeliveryMessage, WebhookPolicy, WebhookRefused, tenant_secret
from delivery.sender import Sender, signed_headers
from scripts.imagegen import photo_jpeg
from scripts.processes import wait_until
from scripts.stack import Stack
from tests.harness.receiver import Receiver

SIGNING_KEY = "test-signing-key"
# A public receiver that needs no DNS: submissions resolve a webhook's host name, and
# the suite runs offline (where hooks.example.com does not resolve).
PUBLIC = "https://93.184.216.34"
INPUT = InputInfo(width=8, height=8, format="JPEG", bytes=10, sha256="0" * 64)


def policy(allow: str = "") -> WebhookPolicy:
    return WebhookPolicy.from_settings(Settings(webhook_allow_hosts=allow))


# ---- the URL policy -------------------------------------------------------------------

@pytest.mark.parametrize("url, allow", [
    ("https://hooks.example.com/m2fp?token=abc", ""),
    ("https://hooks.example.com:8443/m2fp", ""),
    ("https://93.184.216.34/hook", ""),  # a public address, literally
    ("http://127.0.0.1:9000/hook", "127.0.0.1"),
    ("http://receiver.internal/hook", "receiver.internal"),
    ("https://10.1.2.3/hook", "10.0.0.0/8"),
    ("http://[::1]:8080/hook", "::1"),
    ("https://例え.jp/hook", ""),  # an international name (sent as IDNA)
    ("https://1.com/hook", ""),  # digits, but a name
])
def test_the_policy_accepts_public_https_and_what_the_operator_allows(url, allow):
    assert policy(allow).check(url) == url


@pytest.mark.parametrize("url, allow, why", [
    ("http://hooks.example.com/hook", "", "must be https"),
    ("http://127.0.0.1:9000/hook", "", "must be https"),
    ("https://127.0.0.1/hook", "", "local or private"),
    ("https://10.1.2.3/hook", "192.168.0.0/16", "local or private"),
    ("https://169.254.169.254/latest/meta-data/", "", "local or private"),  # cloud metadata
    ("https://[::1]/hook", "", "local or private"),
    ("https://[::ffff:127.0.0.1]/hook", "", "local or private"),
    ("https://localhost/hook", "", "local or private"),
    ("https://api.localhost/hook", "", "local or private"),
    ("https://user:secret@hooks.example.com/hook", "", "user:password@"),
    ("ftp://hooks.example.com/hook", "", "absolute https URL"),
    ("https:///no-host", "", "absolute https URL"),
    ("hooks.example.com/hook", "", "absolute https URL"),
    ("https://hooks.example.com:99999/hook", "", "not a URL"),
    ("https://2130706433/hook", "", "local or private"),  # 127.0.0.1, as the resolver reads it
    ("https://127.1/hook", "", "local or private"),
    ("https://0x7f.1/hook", "", "local or private"),
    ("https://localhost./hook", "", "local or private"),
    ("https://[64:ff9b::a00:1]/hook", "", "local or private"),  # NAT64 of 10.0.0.1
    ("https://[2002:a00:1::]/hook", "", "local or private"),  # 6to4 of 10.0.0.1
    ("https://[::7f00:1]/hook", "", "local or private"),  # IPv4-compatible 127.0.0.1
    ("https://[::ffff:0:a9fe:a9fe]/hook", "", "local or private"),  # IPv4-translated 169.254.169.254
    ("https://[::5db8:d822]/hook", "", "local or private"),  # IPv4-compatible: refused whatever it carries
    ("https://a..b/hook", "", "not a valid host name"),
    ("https://" + "a" * 64 + ".com/hook", "", "not a valid host name"),
])
def test_the_policy_refuses_plain_http_local_addresses_and_credentials(url, allow, why):
    with pytest.raises(ServiceError) as refused:
        policy(allow).check(url)
    assert refused.value.code is ErrorCode.INVALID_WEBHOOK and why in refused.value.message


def test_at_delivery_a_name_that_resolves_to_a_private_address_is_refused_unless_allowed():
    with pytest.raises(WebhookRefused, match="not a public address; allow it with WEBHOOK_ALLOW_HOSTS"):
        policy().vet("localhost", 80)  # passed the submission check's literal tests? not by name: here by address
    for address in ("169.254.169.254", "::7f00:1", "::ffff:0:a9fe:a9fe"):
        with pytest.raises(WebhookRefused):
            policy().vet(address, 80)
    assert policy("localhost").vet("localhost", 80)  # allowed by name: whatever it resolves to
    assert policy("127.0.0.0/8, ::1").vet("127.0.0.1", 80) == ["127.0.0.1"]
    assert policy().vet("93.184.216.34", 443) == ["93.184.216.34"]


# ---- signing --------------------------------------------------------------------------

def message(url: str, tenant: str = "alice", body: str = '{"id":"x","status":"succeeded"}') -> DeliveryMessage:
    return DeliveryMessage(job_id="J" * 22, delivery_id="D" * 22, event="succeeded", tenant=tenant, url=url,
                           body=body, created=0)


def test_each_tenant_has_its_own_secret_and_the_reference_library_verifies_its_signatures():
    alice, bob = tenant_secret(SIGNING_KEY, "alice"), tenant_secret(SIGNING_KEY, "bob")
    assert alice.startswith("whsec_") and alice != bob
    assert alice == tenant_secret(SIGNING_KEY, "alice") != tenant_secret("another-key", "alice")
    delivery = message("https://hooks.example.com/hook")
    headers = signed_headers(delivery, SIGNING_KEY)
    assert headers["webhook-id"] == delivery.delivery_id
    assert Verifier(alice).verify(delivery.body, headers) == json.loads(delivery.body)
    with pytest.raises(WebhookVerificationError):
        Verifier(bob).verify(delivery.body, headers)  # another tenant's secret
    with pytest.raises(WebhookVerificationError):
        Verifier(alice).verify(delivery.body.replace("succeeded", "failed"), headers)  # a changed body
    stale = signed_headers(delivery, SIGNING_KEY, datetime.datetime.now(datetime.timezone.utc)
                           - datetime.timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Verifier(alice).verify(delivery.body, stale)  # a replay


def test_the_docs_verification_snippet_accepts_our_signatures_and_refuses_others():
    from pathlib import Path

    section = (Path(__file__).resolve().parent.parent / "docs" / "webhooks.md").read_text()
    snippet = section[section.index("```python\n") + len("```python\n"):section.index("\n```", section.index("```python"))]
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 (our own docs)
    verify = namespace["verify"]
    delivery = message("https://hooks.example.com/hook")
    headers, body = signed_headers(delivery, SIGNING_KEY), delivery.body.encode()
    assert verify(tenant_secret(SIGNING_KEY, "alice"), headers, body)
    assert not verify(tenant_secret(SIGNING_KEY, "bob"), headers, body)
    assert not verify(tenant_secret(SIGNING_KEY, "alice"), headers, body + b" ")
    stale = signed_headers(delivery, SIGNING_KEY, datetime.datetime.now(datetime.timezone.utc)
                           - datetime.timedelta(minutes=10))
    assert not verify(tenant_secret(SIGNING_KEY, "alice"), stale, body)


# ---- the job store's events -------------------------------------------------------------

@pytest.fixture()
def notified_store(redis_url):
    sent = []
    return JobStore(redis_client(redis_url), ttl_seconds=3600, on_event=sent.append), sent


def hook(*events: WebhookEvent) -> Webhook:
    return Webhook(url="https://hooks.example.com/hook", events=list(events), links_base="http://api.test/")


def test_a_step_to_a_subscribed_status_begins_a_delivery_and_notifies(notified_store):
    store, sent = notified_store
    store.create("a" * 22, INPUT, Priority.INTERACTIVE, webhook=hook(WebhookEvent.SUCCEEDED))
    assert sent == []  # created: not an event
    store.start("a" * 22, "w1", "m1")
    assert sent == []  # running: not asked for
    job = store.succeed("a" * 22, JobResult(outputs={}, summary={}))
    assert [(s.id, s.webhook.event) for s in sent] == [(job.id, WebhookEvent.SUCCEEDED)]
    assert job.webhook.delivery_id and not job.webhook.delivered and job.webhook.attempts == 0


def test_each_event_gets_its_own_delivery_id_and_a_late_attempt_at_an_older_one_is_not_noted(notified_store):
    store, sent = notified_store
    store.create("b" * 22, INPUT, Priority.INTERACTIVE, webhook=hook(WebhookEvent.RUNNING, WebhookEvent.SUCCEEDED))
    running = store.start("b" * 22, "w1", "m1").webhook
    done = store.succeed("b" * 22, JobResult(outputs={}, summary={})).webhook
    assert [s.webhook.event for s in sent] == [WebhookEvent.RUNNING, WebhookEvent.SUCCEEDED]
    assert running.delivery_id != done.delivery_id
    failed = Delivery(delivered=False, status=500, error="HTTP 500", next_attempt_at="2030-01-01T00:00:00.000Z")
    assert store.record_delivery("b" * 22, running.delivery_id, failed).webhook == done  # stale: left alone
    noted = store.record_delivery("b" * 22, done.delivery_id, failed).webhook
    assert (noted.attempts, noted.last_status, noted.last_error, noted.delivered) == (1, 500, "HTTP 500", False)
    noted = store.record_delivery("b" * 22, done.delivery_id, Delivery(delivered=True, status=204)).webhook
    assert (noted.attempts, noted.last_status, noted.last_error, noted.delivered, noted.next_attempt_at) == \
        (2, 204, None, True, None)
    assert store.record_delivery("gone" + "x" * 18, done.delivery_id, failed) is None


def test_a_canceled_queued_job_notifies_and_subscribe_only_fills_an_empty_webhook(notified_store):
    store, sent = notified_store
    store.create("c" * 22, INPUT, Priority.INTERACTIVE)
    first = store.subscribe("c" * 22, hook(WebhookEvent.CANCELED)).webhook
    assert first is not None
    second = Webhook(url="https://other.example.com/", events=[WebhookEvent.CANCELED], links_base="http://api.test/")
    assert store.subscribe("c" * 22, second).webhook.url == first.url
    store.request_cancel("c" * 22)
    assert [s.webhook.event for s in sent] == [WebhookEvent.CANCELED]


def test_a_delivery_that_stayed_delivered_ignores_a_late_failed_duplicate(notified_store):
    store, _ = notified_store
    store.create("e" * 22, INPUT, Priority.INTERACTIVE, webhook=hook(WebhookEvent.RUNNING))
    delivery_id = store.start("e" * 22, "w1", "m1").webhook.delivery_id
    store.record_delivery("e" * 22, delivery_id, Delivery(delivered=True, status=200))
    late = store.record_delivery("e" * 22, delivery_id, Delivery(delivered=False, error="timed out",
                                                                next_attempt_at="2030-01-01T00:00:00.000Z"))
    assert (late.webhook.delivered, late.webhook.attempts, late.webhook.last_error) == (True, 1, None)


class SentWebhooks:
    """The queue side of the notifier, recording instead of sending (the outbox is real)."""

    def __init__(self):
        self.sent = []

    def send_webhook(self, delivery: dict) -> None:
        self.sent.append(delivery)


def test_a_delivery_whose_message_was_lost_is_found_in_the_outbox_and_sent_again(redis_url, local_store):
    from common.webhooks import WebhookNotifier

    def lost(_job):
        raise redis.ConnectionError("the message never left")

    store = JobStore(redis_client(redis_url), ttl_seconds=3600, on_event=lost)
    store.create("f" * 22, INPUT, Priority.INTERACTIVE, webhook=hook(WebhookEvent.RUNNING, WebhookEvent.SUCCEEDED))
    running = store.start("f" * 22, "w1", "m1").webhook.delivery_id
    queue = SentWebhooks()
    notifier = WebhookNotifier(Settings(), local_store, queue)
    assert notifier.resend_unsent(store, older_than=60) == 0  # too recent: its message may still be on its way
    assert notifier.resend_unsent(store, older_than=0) == 1
    assert [(m["job_id"], m["delivery_id"], m["event"]) for m in queue.sent] == [("f" * 22, running, "running")]
    assert json.loads(queue.sent[0]["body"])["status"] == "running"
    assert notifier.resend_unsent(store, older_than=60) == 0  # re-dated: not sent again at once
    store.outbox.attempted("f" * 22, running)
    assert notifier.resend_unsent(store, older_than=0) == 0  # a delivery worker has it
    succeeded = store.succeed("f" * 22, JobResult(outputs={}, summary={})).webhook.delivery_id
    store.client.zadd(store.outbox.key, {f"{'f' * 22} {running}": 0})  # an older event's entry, left behind
    assert notifier.resend_unsent(store, older_than=0) == 1  # only the latest event; the superseded one is dropped
    assert queue.sent[-1]["delivery_id"] == succeeded
    assert store.client.zcard(store.outbox.key) == 1


def test_a_failing_notifier_never_fails_the_step(redis_url):
    def broken(_job):
        raise redis.ConnectionError("down")

    store = JobStore(redis_client(redis_url), ttl_seconds=3600, on_event=broken)
    store.create("d" * 22, INPUT, Priority.INTERACTIVE, webhook=hook(WebhookEvent.RUNNING))
    assert store.start("d" * 22, "w1", "m1").status.value == "running"


# ---- one attempt against a real receiver ----------------------------------------------------

def sender(allow: str = "127.0.0.1", **settings) -> Sender:
    return Sender(Settings(webhook_signing_key=SIGNING_KEY, webhook_allow_hosts=allow, **settings))


def test_an_attempt_posts_the_signed_body_and_reads_the_answer():
    with Receiver(answers=[500, 302]) as receiver:
        delivery = message(receiver.url("/in?token=t0k"))
        first, second, third = (sender().attempt(delivery) for _ in range(3))
    assert (first.delivered, first.status, first.error, first.retry) == (False, 500, "HTTP 500", True)
    assert (second.delivered, second.status) == (False, 302)  # a redirect is not followed
    assert (third.delivered, third.status) == (True, 200)
    got = receiver.received()
    assert [r.path for r in got] == ["/in?token=t0k"] * 3
    assert len({r.headers["webhook-id"] for r in got}) == 1  # one delivery, three attempts
    for r in got:
        assert r.headers["content-type"] == "application/json"
        assert Verifier(tenant_secret(SIGNING_KEY, "alice")).verify(r.body, r.headers) == json.loads(delivery.body)


def test_an_attempt_at_a_private_address_not_allowed_is_refused_without_connecting():
    with Receiver() as receiver:
        outcome = sender(allow="").attempt(message(receiver.url()))
    assert not outcome.delivered and not outcome.retry and outcome.error.startswith("refused: 127.0.0.1 resolves")
    assert receiver.received() == []


def test_an_attempt_never_raises_whatever_the_url():
    outcome = sender(allow="例え.test").attempt(message("http://例え.test:9/hook"))
    assert not outcome.delivered and outcome.error.startswith("cannot resolve")


def test_an_attempt_at_a_closed_port_fails_and_is_retried():
    with Receiver() as receiver:
        url = receiver.url()
    outcome = sender().attempt(message(url))  # the receiver is gone: nothing listens there
    assert (outcome.delivered, outcome.status, outcome.error, outcome.retry) == (False, None, "connection refused",
                                                                                  True)


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory):
    """A CA and a certificate it signed for ``localhost``: a receiver behind a private CA."""
    base = tmp_path_factory.mktemp("ca")
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, key, issuer, issuer_key, ca):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m2fp test CA")])
    ca_cert = cert(ca_name, ca_key, ca_name, ca_key, True)
    server_cert = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), server_key, ca_name,
                       ca_key, False)
    pem = serialization.Encoding.PEM
    (base / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (base / "server.pem").write_bytes(server_cert.public_bytes(pem) + server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(base / "server.pem")
    return base / "ca.pem", context


def test_https_goes_to_the_vetted_address_and_checks_the_certificate_for_the_host_name(private_ca):
    ca_file, tls = private_ca
    with Receiver(tls=tls) as receiver:
        url = receiver.url(host="localhost", scheme="https")
        trusted = sender(allow="localhost", webhook_ca_file=ca_file).attempt(message(url))
        untrusted = sender(allow="localhost").attempt(message(url))  # the public CA bundle: not this CA
        wrong_name = sender(allow="127.0.0.1", webhook_ca_file=ca_file).attempt(message(
            receiver.url(scheme="https")))  # the certificate names localhost, not 127.0.0.1
    assert (trusted.delivered, trusted.status) == (True, 200)
    assert receiver.received()[0].headers["host"] == f"localhost:{receiver.port}"
    assert not untrusted.delivered
    assert untrusted.error == "TLS: the receiver's certificate was not accepted (unable to get local issuer certificate)"
    assert not wrong_name.delivered and wrong_name.error == (
        "TLS: the receiver's certificate was not accepted (hostname '127.0.0.1' doesn't match 'localhost')")
    assert "_ssl.c" not in untrusted.error + wrong_name.error  # OpenSSL's source lines stay out of clients' view
    assert len(receiver.received()) == 1


def test_retries_wait_longer_each_time_up_to_a_cap_below_the_visibility_timeout():
    from delivery.tasks import backoff_seconds

    waits = [backoff_seconds(n, Settings()) for n in (1, 2, 3, 20)]
    assert 4.5 <= waits[0] <= 5.5 and 9 <= waits[1] <= 11 and 18 <= waits[2] <= 22 and 1620 <= waits[3] <= 1980
    short = Settings(visibility_timeout=30, task_time_limit=13, task_soft_time_limit=11, retry_backoff_max=3)
    assert backoff_seconds(20, short) <= 15 * 1.1  # half the visibility timeout, whatever WEBHOOK_BACKOFF_MAX says


# ---- the API's checks --------------------------------------------------------------------

@pytest.fixture()
def api(settings):
    settings = Settings(**{**settings.model_dump(), "webhook_signing_key": SIGNING_KEY,
                           "webhook_allow_hosts": "127.0.0.1", "api_keys": "alice:alice-key,bob:bob-key"})
    return create_app(settings).test_client()


def submit(client, key="alice-key", data=None, **fields):
    data = data or photo_jpeg(64, 48)
    return client.post("/v1/jobs", data={"image": (io.BytesIO(data), "a.jpg"), **fields},
                       content_type="multipart/form-data", headers={"Authorization": f"Bearer {key}"})


def test_a_submission_names_its_webhook_and_events_and_the_job_shows_them(api):
    job = submit(api, webhook="http://127.0.0.1:9/hook", webhook_events="running, succeeded").get_json()
    assert job["webhook"] == {"url": "http://127.0.0.1:9/hook", "events": ["running", "succeeded"], "event": None,
                              "delivery_id": None, "delivered": False, "attempts": 0, "last_status": None,
                              "last_error": None, "next_attempt_at": None}
    default = submit(api, data=photo_jpeg(65, 48), webhook=f"{PUBLIC}/h").get_json()
    assert default["webhook"]["events"] == ["succeeded", "failed", "canceled"]
    assert "webhook" not in submit(api, data=photo_jpeg(66, 48)).get_json()


def test_a_batch_webhook_serves_every_item_and_a_bad_item_still_fails_alone(api):
    answer = api.post("/v1/jobs/batch", data={
        "image": [(io.BytesIO(b"not an image"), "bad.jpg"), (io.BytesIO(photo_jpeg(70, 48)), "good.jpg")],
        "webhook": f"{PUBLIC}/batch", "webhook_events": ["succeeded", "failed"]},
        content_type="multipart/form-data", headers={"Authorization": "Bearer alice-key"})
    bad, good = answer.get_json()["items"]
    assert good["job"]["webhook"]["url"] == f"{PUBLIC}/batch"
    assert good["job"]["webhook"]["events"] == ["succeeded", "failed"]
    assert (bad["ref"], bad["status"], bad["error"]["code"]) == ("bad.jpg", 422, "invalid_image")


def test_the_same_content_gets_the_webhook_only_if_its_job_has_none(api):
    photo = photo_jpeg(67, 48)
    plain = submit(api, data=photo).get_json()
    first = submit(api, data=photo, webhook=f"{PUBLIC}/a").get_json()
    second = submit(api, data=photo, webhook=f"{PUBLIC}/b").get_json()
    assert first["id"] == second["id"] == plain["id"] and first["deduplicated"]
    assert first["webhook"]["url"] == second["webhook"]["url"] == f"{PUBLIC}/a"


@pytest.mark.parametrize("fields, code", [
    ({"webhook": "http://hooks.example.com/h"}, "invalid_webhook"),
    ({"webhook": "https://169.254.169.254/h"}, "invalid_webhook"),
    ({"webhook": "https://hooks.example.com/" + "x" * 2100}, "invalid_webhook"),
    ({"webhook": "https://hooks.example.com/h", "webhook_events": "finished"}, "invalid_webhook"),
    ({"webhook_events": "succeeded"}, "invalid_webhook"),
])
def test_a_bad_webhook_is_a_400_with_its_code_in_both_encodings(api, fields, code):
    form = submit(api, **fields)
    body = {"source": "s3://m2fp/a.jpg", **fields}
    if "webhook_events" in body:
        body["webhook_events"] = body["webhook_events"].split(",")
    as_json = api.post("/v1/jobs", json=body, headers={"Authorization": "Bearer alice-key"})
    for response in (form, as_json):
        assert (response.status_code, response.get_json()["error"]["code"]) == (400, code), response.get_json()


def local_name() -> str:
    """This machine's own name: /etc/hosts (or nss-myhostname) maps it to a loopback or
    private address on any machine the suite runs on, and no literal check knows it."""
    import ipaddress

    name = socket.gethostname()
    addresses = {entry[4][0] for entry in socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)}
    assert addresses and not any(ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses), \
        f"this machine's name {name} should resolve to a local address, not {addresses}"
    return name


class Resolver:
    """``socket.getaddrinfo`` as the webhook policy calls it, answering for the names given
    to :meth:`answer` (the suite has no DNS; these stand for public ones) and handing every
    other name to the machine's resolver. Records each (host, port) asked."""

    def __init__(self, real: Callable[..., list]) -> None:
        self.real = real
        self.answers: dict[str, list[str]] = {}
        self.asked: list[tuple[str, int]] = []

    def answer(self, name: str, *addresses: str) -> None:
        self.answers[name] = list(addresses)

    def __call__(self, host: str, port: int, family: int = 0, type: int = 0,  # noqa: A002 (socket's names)
                 proto: int = 0, flags: int = 0) -> list:
        self.asked.append((host, port))
        if host not in self.answers:
            return self.real(host, port, family, type, proto, flags)
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                 (address, port, 0, 0) if ":" in address else (address, port)) for address in self.answers[host]]


@pytest.fixture()
def resolver(monkeypatch) -> Resolver:
    """Name resolution for this process, where the policy looks names up."""
    fake = Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def test_at_submission_a_name_is_resolved_and_refused_if_local_or_unknown(resolver):
    name = local_name()  # the machine's own resolver: no literal check can tell
    policy().check(f"https://{name}/hook")
    with pytest.raises(ServiceError, match=f"the webhook host {name} resolves to .*not a public address"):
        policy().admit(f"https://{name}/hook")
    assert policy(name).admit(f"http://{name}:9/hook") == f"http://{name}:9/hook"
    assert not [asked for asked in resolver.asked if asked[1] == 9]  # allowed by name: not resolved
    with pytest.raises(ServiceError, match="does not resolve"):
        policy().admit("https://no-such-host.invalid/hook")  # RFC 6761: never a name
    resolver.answer("hooks.example.com", "93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    resolver.answer("intranet.example.com", "10.1.2.3")
    resolver.answer("split.example.com", "93.184.216.34", "169.254.169.254")
    assert policy().admit("https://hooks.example.com:8443/hook") == "https://hooks.example.com:8443/hook"
    assert ("hooks.example.com", 8443) in resolver.asked  # admitted because its answer was looked at
    with pytest.raises(ServiceError, match="the webhook host intranet.example.com resolves to 10.1.2.3, "
                                           "which is not a public address; allow it with WEBHOOK_ALLOW_HOSTS"):
        policy().admit("https://intranet.example.com/hook")
    with pytest.raises(ServiceError, match="the webhook host split.example.com resolves to 169.254.169.254"):
        policy().admit("https://split.example.com/hook")  # one private address among public ones is enough
    assert ("intranet.example.com", 443) in resolver.asked and ("split.example.com", 443) in resolver.asked
    asked = len(resolver.asked)
    assert policy().admit(f"{PUBLIC}/hook") == f"{PUBLIC}/hook"
    assert len(resolver.asked) == asked  # a literal address is judged as written, never looked up


def test_a_submission_naming_a_host_that_resolves_locally_gets_400_unless_allowed(settings, resolver):
    name = local_name()
    resolver.answer("intranet.example.com", "10.1.2.3")
    resolver.answer("hooks.example.com", "93.184.216.34")

    def api_allowing(hosts: str):
        return create_app(Settings(**{**settings.model_dump(), "webhook_signing_key": SIGNING_KEY,
                                      "webhook_allow_hosts": hosts, "api_keys": "alice:alice-key"})).test_client()

    closed = api_allowing("")
    for webhook in (f"https://{name}/hook", "https://intranet.example.com/hook", "https://no-such-host.invalid/hook"):
        form = submit(closed, webhook=webhook)
        as_json = closed.post("/v1/jobs", json={"source": "s3://m2fp/a.jpg", "webhook": webhook},
                              headers={"Authorization": "Bearer alice-key"})
        batch = closed.post("/v1/jobs/batch", json={"items": [{"source": "s3://m2fp/a.jpg"}], "webhook": webhook},
                            headers={"Authorization": "Bearer alice-key"})
        for response in (form, as_json, batch):
            assert (response.status_code, response.get_json()["error"]["code"]) == (400, "invalid_webhook")
    assert submit(api_allowing(name), webhook=f"https://{name}/hook").status_code == 202
    public = submit(closed, data=photo_jpeg(90, 48), webhook="https://hooks.example.com/hook")  # a new job
    assert public.status_code == 202 and public.get_json()["webhook"]["url"] == "https://hooks.example.com/hook"
    assert ("hooks.example.com", 443) in resolver.asked


def test_a_service_without_a_signing_key_refuses_webhooks_and_says_why(settings):
    client = create_app(settings).test_client()
    refused = client.post("/v1/jobs", data={"image": (io.BytesIO(photo_jpeg(64, 48)), "a.jpg"),
                                            "webhook": "https://hooks.example.com/h"})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "webhooks_disabled"
    assert "WEBHOOK_SIGNING_KEY" in refused.get_json()["error"]["message"]
    assert client.get("/v1/webhooks/secret").get_json()["error"]["code"] == "webhooks_disabled"


def test_each_tenant_reads_its_own_secret_and_only_with_a_key(api):
    alice = api.get("/v1/webhooks/secret", headers={"Authorization": "Bearer alice-key"}).get_json()
    bob = api.get("/v1/webhooks/secret", headers={"X-API-Key": "bob-key"}).get_json()
    assert alice == {"tenant": "alice", "secret": tenant_secret(SIGNING_KEY, "alice")}
    assert bob["tenant"] == "bob" and bob["secret"] != alice["secret"]
    assert api.get("/v1/webhooks/secret").status_code == 401


# ---- the whole path through the real stack --------------------------------------------------

@pytest.fixture()
def hook_stack(redis_server, tiny_model, tmp_path):
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/10", "M2FP_MODEL": str(tiny_model),
           "INFERENCE_MAX_SIDE": "320", "TORCH_THREADS": "1", "LOCAL_STORE_DIR": str(tmp_path / "store"),
           "WEBHOOK_SIGNING_KEY": SIGNING_KEY, "WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
           "WEBHOOK_BACKOFF_FIRST": "0.2", "WEBHOOK_TIMEOUT_SECONDS": "120"}
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    stack = Stack(env=env, log_dir=tmp_path).start_api()
    yield stack
    stack.stop()


def post(stack: Stack, data: bytes, **fields) -> dict:
    import requests

    response = requests.post(f"{stack.api_url}/v1/jobs", files={"image": ("a.jpg", data, "image/jpeg")},
                             data=fields, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()


def verified(delivery) -> dict:
    return Verifier(tenant_secret(SIGNING_KEY, "default")).verify(delivery.body, delivery.headers)


def test_a_receiver_that_fails_at_first_gets_each_event_signed_and_the_job_shows_the_delivery(hook_stack):
    stack = hook_stack
    stack.start_worker()
    stack.start_delivery()
    with Receiver(fail_first=2) as receiver:
        job = post(stack, photo_jpeg(160, 120), webhook=receiver.url(), webhook_events="running,succeeded")
        done = receiver.wait_for(lambda r: r.answered == 200 and json.loads(r.body)["status"] == "succeeded",
                                 "the succeeded event to be delivered")
        wait_until(lambda: stack.job(job["id"])["webhook"]["delivered"], 60, "the delivery to be noted on the job")
        view = stack.job(job["id"])
        got = receiver.received()
    body = verified(done)
    assert body["id"] == job["id"] and body["status"] == "succeeded"
    assert body["result"]["outputs"]["labels.png"] == f"{stack.api_url}/v1/jobs/{job['id']}/outputs/labels.png"
    events = {json.loads(r.body)["status"]: r.headers["webhook-id"] for r in got}
    assert set(events) == {"running", "succeeded"} and len(set(events.values())) == 2
    for r in got:
        verified(r)
    for status, delivery_id in events.items():  # each failed twice, then was retried until its 200
        assert [r.answered for r in got if r.headers["webhook-id"] == delivery_id] == [500, 500, 200], status
    assert view["webhook"] == {
        "url": receiver.url(), "events": ["running", "succeeded"], "event": "succeeded",
        "delivery_id": events["succeeded"], "delivered": True, "attempts": 3,
        "last_status": 200, "last_error": None, "next_attempt_at": None}


def test_a_receiver_that_hangs_never_holds_up_the_next_job(hook_stack):
    stack = hook_stack
    stack.start_worker()
    stack.start_delivery()
    with Receiver(hold=True) as receiver:
        slow = post(stack, photo_jpeg(160, 120), webhook=receiver.url())
        assert receiver.arrived.wait(120), stack.logs()  # the delivery of `slow` waits on the receiver now
        following = post(stack, photo_jpeg(161, 120))
        assert stack.wait_for(following["id"])["status"] == "succeeded"
        pending = stack.job(slow["id"])["webhook"]
        assert (pending["event"], pending["delivered"], pending["attempts"]) == ("succeeded", False, 0)
        receiver.release.set()
        wait_until(lambda: stack.job(slow["id"])["webhook"]["delivered"], 60, "the held delivery to complete")
    assert verified(receiver.received()[0])["id"] == slow["id"]


def cancel(stack: Stack, job_id: str) -> None:
    import requests

    assert requests.post(f"{stack.api_url}/v1/jobs/{job_id}/cancel", timeout=10).status_code == 200


def test_canceling_a_queued_job_delivers_the_canceled_event(hook_stack):
    stack = hook_stack  # no model worker: the job stays queued until canceled
    stack.start_delivery()
    with Receiver() as receiver:
        job = post(stack, photo_jpeg(160, 120), webhook=receiver.url(), webhook_events="canceled")
        cancel(stack, job["id"])
        delivery = receiver.wait_for(lambda r: True, "the canceled event")
    body = verified(delivery)
    assert (body["id"], body["status"], body["webhook"]["event"]) == (job["id"], "canceled", "canceled")


def test_a_delivery_is_given_up_once_its_retry_window_has_passed(hook_stack):
    stack = hook_stack
    delivery = stack.start_delivery(WEBHOOK_RETRY_SECONDS="2")  # waits 0.2, 0.4, 0.8 s...: a few attempts
    wait_until(lambda: " ready." in delivery.log_text(), 60, "the delivery worker to start")
    with Receiver(fail_first=1000) as receiver:
        job = post(stack, photo_jpeg(160, 120), webhook=receiver.url())
        cancel(stack, job["id"])
        wait_until(lambda: stack.job(job["id"])["webhook"]["attempts"] > 0
                   and stack.job(job["id"])["webhook"]["next_attempt_at"] is None, 60, "the delivery to be given up")
        given_up = stack.job(job["id"])["webhook"]
        attempts = len(receiver.received())
    assert (given_up["delivered"], given_up["last_status"], given_up["last_error"]) == (False, 500, "HTTP 500")
    assert given_up["attempts"] == attempts >= 2  # retried before giving up
    assert "given up" in delivery.log_text()


def test_the_delivery_worker_sends_an_event_whose_message_was_lost(hook_stack):
    stack = hook_stack
    with Receiver() as receiver:
        # A job moved to `canceled` by a process that died before sending the event's message.
        store = JobStore(redis_client(stack.env["REDIS_URL"]), ttl_seconds=3600)
        store.create("g" * 22, INPUT, Priority.INTERACTIVE, webhook=Webhook(
            url=receiver.url(), events=[WebhookEvent.CANCELED], links_base=stack.api_url + "/"))
        delivery_id = store.request_cancel("g" * 22).webhook.delivery_id
        stack.start_delivery(WEBHOOK_RESEND_AFTER="1")
        delivery = receiver.wait_for(lambda r: True, "the lost event to be sent from the outbox")
    assert delivery.headers["webhook-id"] == delivery_id
    assert verified(delivery)["status"] == "canceled"
    assert "never reached a delivery worker; sending it again" in stack.workers[-1].log_text()
