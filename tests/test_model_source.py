"""Finding the model: a local directory, or the hub, with a message per way of failing.

The hub is reached the way a worker reaches it: modelscope's own client, pointed by its
``MODELSCOPE_DOMAIN`` setting at 127.0.0.1, either at a port nobody listens on (offline)
or at :class:`FakeHub`, a real https server behind a private CA that requests trusts
through ``REQUESTS_CA_BUNDLE``. Nothing in modelscope or requests is patched."""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.settings import Settings
from worker.model_source import ModelUnavailable, resolve_model_dir

MODEL = "damo/cv_resnet101_image-multiple-human-parsing"
OFFLINE = "Offline?"  # the unreachable hub's advice: no other failure may give it


def test_local_model_directory_is_used_as_is(tiny_model, tmp_path):
    settings = Settings(m2fp_model=str(tiny_model), model_cache_dir=tmp_path)
    assert resolve_model_dir(settings) == tiny_model.resolve()


def test_directory_without_weights_names_what_is_missing(tmp_path):
    (tmp_path / "configuration.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="lacks pytorch_model.pt"):
        resolve_model_dir(Settings(m2fp_model=str(tmp_path)))


def test_a_mistyped_local_directory_is_named_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "127.0.0.1:9")
    with pytest.raises(ModelUnavailable, match="M2FP_MODEL=models/m2fp-synthetic-tyni is not a directory") as raised:
        resolve_model_dir(Settings(m2fp_model="models/m2fp-synthetic-tyni", model_cache_dir=tmp_path / "cache"))
    assert "make synthetic-model" in str(raised.value) and "download" not in str(raised.value)


# ---- the hub ------------------------------------------------------------------------------

@pytest.fixture()
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 held bound but never listening: every connection to it is
    refused, and nothing else can take it while the test runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def failure(settings: Settings) -> str:
    with pytest.raises(ModelUnavailable) as raised:
        resolve_model_dir(settings)
    return str(raised.value)


def test_offline_hub_download_says_what_to_set(tmp_path, monkeypatch, closed_port):
    monkeypatch.setenv("MODELSCOPE_DOMAIN", f"127.0.0.1:{closed_port}")  # nothing answers there: offline
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    message = failure(Settings(model_cache_dir=tmp_path / "cache"))
    assert message.startswith(f"cannot reach the ModelScope hub at https://127.0.0.1:{closed_port} "
                              f"(MODELSCOPE_DOMAIN sets it) to download {MODEL}@v1.0.1 (ConnectionError: "), message
    # The hub client itself asked that address for the model and was refused.
    assert f"/api/v1/models/{MODEL}/revisions" in message and "Connection refused" in message, message
    assert "Offline? Set M2FP_MODEL to a local model directory (configuration.json + pytorch_model.pt)" in message
    assert "make synthetic-model" in message


def test_a_cache_directory_that_cannot_be_written_is_named_not_taken_for_offline(tmp_path, monkeypatch,
                                                                                  closed_port):
    monkeypatch.setenv("MODELSCOPE_DOMAIN", f"127.0.0.1:{closed_port}")
    (tmp_path / "a-file").write_text("not a directory")  # refused even to root, unlike a chmod
    cache = tmp_path / "a-file" / "cache"
    message = failure(Settings(model_cache_dir=cache))
    assert message.startswith(f"cannot store {MODEL}@v1.0.1 in MODEL_CACHE_DIR={cache} (NotADirectoryError: "), \
        message
    assert "Point MODEL_CACHE_DIR at a directory this process can write" in message and OFFLINE not in message


def test_without_the_hub_client_installed_the_message_says_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope.hub.snapshot_download", None)  # as if not installed
    message = failure(Settings(model_cache_dir=tmp_path / "cache"))
    assert message.startswith(f"M2FP_MODEL={MODEL} is a ModelScope hub id, but the hub client cannot be imported")
    assert "Install the locked requirements" in message and OFFLINE not in message


class FakeHub:
    """The three requests a modelscope 1.9.5 snapshot download makes (the model's
    revisions, its file list, each file), answered over https on 127.0.0.1 for one model.
    ``files=None``: the hub knows no such model and answers 404, as the real one does."""

    def __init__(self, tls: ssl.SSLContext, files: Optional[dict[str, bytes]],
                 revisions: tuple[str, ...] = ("v1.0.1",)) -> None:
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                hub.requests.append(self.path)
                status, body = hub.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if status == 200 and
                                 "FilePath" in self.path else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        self.files, self.revisions = files, revisions
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.domain = f"127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str) -> tuple[int, bytes]:
        url = urlsplit(path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if self.files is None or not url.path.startswith(f"/api/v1/models/{MODEL}/"):
            return 404, json.dumps({"Code": 10010205001, "Message": "model not found", "Success": False}).encode()
        if url.path.endswith("/revisions"):
            tags = [{"Revision": revision} for revision in self.revisions]
            data = {"RevisionMap": {"Tags": tags, "Branches": [{"Revision": "master"}]}}
        elif url.path.endswith("/repo/files"):
            data = {"Files": [{"Name": name, "Path": name, "Type": "blob", "Size": len(content),
                               "Revision": "c0ffee", "Sha256": hashlib.sha256(content).hexdigest()}
                              for name, content in self.files.items()]}
        elif url.path.endswith("/repo") and query.get("FilePath") in self.files:
            return 200, self.files[query["FilePath"]]
        else:
            return 404, b"{}"
        return 200, json.dumps({"Code": 200, "Success": True, "Data": data}).encode()

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hub_tls(tmp_path_factory) -> tuple[Path, ssl.SSLContext]:
    """A private CA (its file for REQUESTS_CA_BUNDLE) and a server context whose
    certificate it signed for 127.0.0.1."""
    base = tmp_path_factory.mktemp("hub-ca")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m2fp test hub CA")])

    def signed(subject: x509.Name, public_key, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    (base / "ca.pem").write_bytes(signed(ca_name, ca_key.public_key(), True).public_bytes(pem))
    server = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    (base / "hub.pem").write_bytes(signed(server, key.public_key(), False).public_bytes(pem) + key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(base / "hub.pem")
    return base / "ca.pem", context


@pytest.fixture()
def hub(hub_tls, monkeypatch) -> Iterator[Callable[..., FakeHub]]:
    """Start a :class:`FakeHub` and point modelscope's client at it through its settings."""
    ca_file, tls = hub_tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    started = []

    def start(files: Optional[dict[str, bytes]], **kwargs) -> FakeHub:
        fake = FakeHub(tls, files, **kwargs).__enter__()
        started.append(fake)
        monkeypatch.setenv("MODELSCOPE_DOMAIN", fake.domain)
        return fake

    yield start
    for fake in started:
        fake.__exit__()


def test_a_model_the_hub_does_not_know_names_m2fp_model(hub, tmp_path):
    fake = hub(files=None)
    message = failure(Settings(m2fp_model="damo/no-such-model", model_cache_dir=tmp_path / "cache"))
    assert fake.requests and fake.requests[0].startswith("/api/v1/models/damo/no-such-model/revisions")
    assert message.startswith(f"the ModelScope hub at https://{fake.domain} answered HTTP 404 for the model "
                              "damo/no-such-model: no such model, or a private one. Check M2FP_MODEL"), message
    assert OFFLINE not in message


def test_a_revision_the_hub_does_not_have_names_m2fp_revision(hub, tmp_path):
    fake = hub(files={"configuration.json": b"{}"}, revisions=("v1.0.1", "v1.0.0"))
    message = failure(Settings(m2fp_revision="v9", model_cache_dir=tmp_path / "cache"))
    assert message.startswith(f"the ModelScope hub at https://{fake.domain} has no revision v9 of {MODEL}"), message
    assert "valid are: [v1.0.1,v1.0.0]" in message and "Set M2FP_REVISION" in message and OFFLINE not in message


def test_a_download_that_is_not_an_m2fp_model_says_so_and_where_it_lies(hub, tmp_path):
    hub(files={"configuration.json": b'{"task": "image-segmentation"}'})
    message = failure(Settings(model_cache_dir=tmp_path / "cache"))
    folder = tmp_path / "cache" / MODEL
    assert (folder / "configuration.json").read_bytes() == b'{"task": "image-segmentation"}'  # really downloaded
    assert message.startswith(f"the hub's {MODEL}@v1.0.1, downloaded into {folder}, lacks pytorch_model.pt: "
                              "it is not an M2FP model in ModelScope's format. Check M2FP_MODEL and M2FP_REVISION"), \
        message
    assert f"delete {folder} and start the worker again" in message and OFFLINE not in message


def test_a_complete_download_is_the_model_directory(hub, tmp_path):
    hub(files={"configuration.json": b"{}", "pytorch_model.pt": b"weights"})
    folder = resolve_model_dir(Settings(model_cache_dir=tmp_path / "cache"))
    assert folder == tmp_path / "cache" / MODEL and (folder / "pytorch_model.pt").read_bytes() == b"weights"
