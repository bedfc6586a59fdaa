"""The settings object: combinations that would run a job twice are refused at load with
the fix named, and neither its repr nor its str (what any log of the settings shows)
nor its errors hold a secret."""
import re

import pytest
from pydantic import ValidationError

from common.settings import Settings, load_settings

REDIS_PASSWORD = "redis-password-1357"
SECRET_ENV = {
    "API_KEYS": "alice:alice-api-key-1234, bob:bob-api-key-5678",
    "WEBHOOK_SIGNING_KEY": "webhook-signing-key-9876",
    "S3_SECRET_KEY": "s3-secret-key-5432",
}
SECRETS = ("alice-api-key-1234", "bob-api-key-5678", "webhook-signing-key-9876", "s3-secret-key-5432", REDIS_PASSWORD)


def secret_env(monkeypatch, redis_url: str, **more: str) -> None:
    """The environment of a deployment with every kind of secret set."""
    for name, value in {**SECRET_ENV, "REDIS_URL": redis_url, "S3_ENDPOINT": "http://minio:9000",
                        "S3_ACCESS_KEY": "m2fp-service", **more}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("redis_url", [
    f"redis://:{REDIS_PASSWORD}@redis.internal:6379/0",
    f"rediss://default:{REDIS_PASSWORD}@redis.internal:6380/1",
])
def test_the_settings_repr_and_str_show_no_secret(monkeypatch, redis_url):
    secret_env(monkeypatch, redis_url)
    settings = load_settings()
    # Read as given (the services connect with them) ...
    assert (settings.s3_secret_key, settings.redis_url) == (SECRET_ENV["S3_SECRET_KEY"], redis_url)
    assert settings.webhook_signing_key == SECRET_ENV["WEBHOOK_SIGNING_KEY"]
    # ... and never shown.
    for shown in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert [secret for secret in SECRETS if secret in shown] == [], shown
        assert "redis.internal" in shown and "http://minio:9000" in shown  # where things are is still said


@pytest.mark.parametrize("field, value, secret", [
    ("s3_secret_key", "s3-secret-5432", "s3-secret-5432"),
    ("webhook_signing_key", "whsk-9876", "whsk-9876"),
    ("api_keys", "bob:bob-key-5678", "bob-key-5678"),
    ("redis_url", "redis://h/0?password=pw-1357", "pw-1357"),
])
def test_a_refused_setting_does_not_quote_the_secrets_into_its_error(field, value, secret):
    # pydantic would quote the input (shortened to its head and tail) in the error, which
    # the process prints as it stops; the secret here is the input's tail.
    with pytest.raises(ValidationError) as raised:
        Settings(task_soft_time_limit=400, **{field: value})
    assert "TASK_SOFT_TIME_LIMIT (400) must be below TASK_TIME_LIMIT (300)" in str(raised.value)
    assert secret not in str(raised.value), str(raised.value)


def test_a_retry_wait_longer_than_the_visibility_timeout_allows_is_refused_at_load(monkeypatch):
    # A retried job's message is held unacknowledged through its countdown, then while its
    # process finishes the job it took meanwhile, then through its own run (each up to
    # TASK_TIME_LIMIT): 300 + 2 x 300 s reaches the 900 s after which Redis redelivers it.
    monkeypatch.setenv("VISIBILITY_TIMEOUT", "900")
    monkeypatch.setenv("TASK_TIME_LIMIT", "300")
    monkeypatch.setenv("RETRY_BACKOFF_MAX", "300")
    with pytest.raises(ValidationError) as raised:
        load_settings()
    message = str(raised.value)
    assert "VISIBILITY_TIMEOUT (900) must exceed RETRY_BACKOFF_MAX (300) plus twice TASK_TIME_LIMIT (300)" in message
    assert "runs twice" in message
    assert "raise VISIBILITY_TIMEOUT above 900 or lower RETRY_BACKOFF_MAX to 299 or less" in message
    monkeypatch.setenv("RETRY_BACKOFF_MAX", "299")  # the fix it names
    assert load_settings().retry_backoff_max == 299
    monkeypatch.setenv("RETRY_BACKOFF_MAX", "300")
    monkeypatch.setenv("VISIBILITY_TIMEOUT", "901")  # the other fix it names
    assert load_settings().visibility_timeout == 901
    monkeypatch.setenv("VISIBILITY_TIMEOUT", "601")  # enough for a countdown and one run only
    with pytest.raises(ValidationError):
        load_settings()


def test_with_no_room_for_any_wait_only_a_longer_visibility_timeout_is_named():
    with pytest.raises(ValidationError) as raised:
        Settings(task_time_limit=300, visibility_timeout=601, retry_backoff_max=1)
    assert "raise VISIBILITY_TIMEOUT above 601" in str(raised.value)
    assert "lower RETRY_BACKOFF_MAX" not in str(raised.value)  # every wait is at least 1 s


def test_a_visibility_timeout_within_the_hard_time_limit_is_refused_with_the_fix():
    with pytest.raises(ValidationError) as raised:
        Settings(task_soft_time_limit=500, task_time_limit=600, visibility_timeout=600, retry_backoff_max=1)
    message = str(raised.value)
    assert "VISIBILITY_TIMEOUT (600) must exceed TASK_TIME_LIMIT (600)" in message
    assert "raise VISIBILITY_TIMEOUT above 600 or lower TASK_TIME_LIMIT" in message
    assert Settings(task_soft_time_limit=500, task_time_limit=600, visibility_timeout=1202,
                    retry_backoff_max=1).visibility_timeout == 1202


def test_the_defaults_pass_every_check():
    settings = Settings()
    assert settings.visibility_timeout > settings.retry_backoff_max + 2 * settings.task_time_limit


def test_sentinel_settings_reach_celery_and_hide_their_passwords():
    from common.celery_factory import create_celery

    settings = Settings(redis_sentinels="sentinel-0:26379, [fd00::7]:26380", redis_master_name="queue",
                        redis_password="master-pw/9", redis_sentinel_password="sentinel-pw-8", redis_db=3)
    assert settings.sentinel_addresses() == [("sentinel-0", 26379), ("fd00::7", 26380)]
    assert settings.redis_wait_replicas == 1  # a 202 behind Sentinel waits for a replica by default
    app = create_celery(settings)
    assert app.conf.broker_url == ("sentinel://:master-pw%2F9@sentinel-0:26379/3;"
                                   "sentinel://:master-pw%2F9@[fd00::7]:26380/3")
    options = app.conf.broker_transport_options
    assert options["master_name"] == "queue" and options["sentinel_kwargs"]["password"] == "sentinel-pw-8"
    assert "master-pw" not in repr(settings) and "sentinel-pw" not in repr(settings)
    assert Settings().redis_wait_replicas == 0 and create_celery(Settings()).conf.broker_url == Settings().redis_url


@pytest.mark.parametrize("entry", ["sentinel-0", "sentinel-0:port", ":26379", "sentinel-0:70000"])
def test_a_sentinel_address_that_is_not_host_port_is_refused_at_load(entry):
    with pytest.raises(ValidationError, match=f"REDIS_SENTINELS entry '{re.escape(entry)}' is not host:port"):
        Settings(redis_sentinels=f"ok:26379,{entry}")


def test_a_replica_wait_the_apis_redis_calls_would_cut_off_is_refused_at_load():
    """A WAIT longer than the API's Redis socket timeout ends in that timeout: the API would
    answer 503 for a job it had already created and queued."""
    from api.app import REDIS_SOCKET_TIMEOUT

    assert Settings(redis_wait_ms=1500).redis_wait_ms == 1500
    with pytest.raises(ValidationError, match="redis_wait_ms"):
        Settings(redis_wait_ms=REDIS_SOCKET_TIMEOUT * 1000)
