"""Shared fixtures: real Redis, a real S3 endpoint, the tiny synthetic model.

Everything runs on 127.0.0.1; nothing here is a mock of Redis, S3 or Celery.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from common.job_store import JobStore
from common.redis_connection import redis_client
from common.settings import Settings
from common.storage import LocalStore, S3Store
from scripts.processes import RedisServer, free_port

# Worker subprocesses and in-process engines share the two cores politely.
os.environ.setdefault("OMP_NUM_THREADS", "1")
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the moto server logs every request

S3_KEYS = {"access_key": "test-access", "secret_key": "test-secret-key"}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisServer:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server, request) -> str:
    """A Redis database of the session's server, emptied before the test."""
    url = redis_server.url
    client = redis_client(url)
    client.flushdb()
    return url


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3 HTTP endpoint on loopback (moto's server mode)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_store(s3_endpoint, request) -> S3Store:
    bucket = f"test-{uuid.uuid4().hex}"
    store = S3Store(s3_endpoint, S3_KEYS["access_key"], S3_KEYS["secret_key"], bucket)
    store.ensure_bucket()
    return store


@pytest.fixture()
def local_store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def store(request):
    """Each storage test runs against both backends."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from worker.synthetic import write_model

    return write_model(tmp_path_factory.mktemp("models") / "m2fp-tiny", "tiny")


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory, tiny_model) -> Path:
    """The tiny model's OpenVINO engine, built once; worker subprocesses started by any
    test inherit MODEL_CACHE_DIR and reuse it, as workers sharing a volume do."""
    from worker.engine_cache import ensure_entry

    cache_dir = tmp_path_factory.mktemp("model-cache")
    ensure_entry(cache_dir, tiny_model)
    os.environ["MODEL_CACHE_DIR"] = str(cache_dir)
    return cache_dir


@pytest.fixture(scope="session")
def tiny_engine_dir(engine_cache, tiny_model) -> Path:
    from worker.engine_cache import entry_dir

    return entry_dir(engine_cache, tiny_model)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model):
    """The reference (torch) engine on the tiny model."""
    from worker.torch_engine import TorchEngine

    return TorchEngine(tiny_model, max_side=320)


@pytest.fixture(scope="session")
def fast_engine(tiny_model, tiny_engine_dir):
    """The default (OpenVINO) engine on the tiny model."""
    from worker.openvino_engine import OpenVINOEngine

    return OpenVINOEngine(tiny_model, tiny_engine_dir, max_side=320, threads=1)


@pytest.fixture()
def job_store(redis_url) -> JobStore:
    return JobStore(redis_client(redis_url), ttl_seconds=3600)


@pytest.fixture()
def settings(tmp_path, redis_url, tiny_model, engine_cache) -> Settings:
    return Settings(redis_url=redis_url, local_store_dir=tmp_path / "store",
                    m2fp_model=str(tiny_model), inference_max_side=320, model_cache_dir=engine_cache)


@pytest.fixture()
def services(settings):
    """The services of ``settings`` (real Redis, local store) as a process builds them."""
    from common.services import Services

    return Services.create(settings)


def pytest_terminal_summary(terminalreporter) -> None:
    import sys

    contract = sys.modules.get("tests.test_contract")
    if contract:
        contract.report(terminalreporter.write_line)
