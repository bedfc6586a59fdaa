"""The one way every process of the service connects to Redis."""
from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def redis_client(url: str, socket_timeout: float = 10, retries: int = 6) -> redis.Redis:
    """A client that rides out a Redis restart: short timeouts, retried with backoff.

    Workers keep the defaults (a job may wait out a restart); the API passes a small
    budget so that a hung Redis gives its client a 503 well inside gunicorn's worker
    timeout instead of a killed worker and a dropped connection.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(5, socket_timeout),
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
