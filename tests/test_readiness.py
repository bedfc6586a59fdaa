"""/readyz answers anyone: it names the check that failed, and only the log says why
(hosts, ports, the error), against a Redis that stopped and a store nothing listens for."""
from __future__ import annotations

import logging

from api.app import create_app
from common.services import Services
from common.settings import Settings
from scripts.processes import RedisServer, free_port


def test_readyz_names_the_failed_check_and_only_the_log_says_why(settings, tmp_path, caplog):
    redis = RedisServer(tmp_path / "redis").start()
    dead_store = free_port()  # nothing listens there
    broken = Settings(**{**settings.model_dump(), "redis_url": redis.url, "storage_backend": "s3",
                         "s3_endpoint": f"http://127.0.0.1:{dead_store}", "s3_access_key": "k",
                         "s3_secret_key": "s"})
    client = create_app(services=Services.create(broken, redis_retries=0)).test_client()
    with caplog.at_level(logging.WARNING, logger="api.health"):
        storage_down = client.get("/readyz")
        redis.stop()
        both_down = client.get("/readyz")
    assert storage_down.status_code == 503
    assert storage_down.json == {"status": "not_ready", "checks": {"redis": "ok", "storage": "unavailable"}}
    assert both_down.json == {"status": "not_ready", "checks": {"redis": "unavailable", "storage": "unavailable"}}
    log = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (str(redis.port), str(dead_store)):  # the log names each address; no answer does
        assert secret in log
        assert secret not in storage_down.get_data(as_text=True) + both_down.get_data(as_text=True)
