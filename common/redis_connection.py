"""The one way every process of the service connects to Redis: one server by URL, or the
current master of a Sentinel group (``REDIS_SENTINELS``), for redis-py and Celery alike."""
from __future__ import annotations

from typing import Any, Union
from urllib.parse import quote

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from common.settings import Settings

# The key :func:`confirm_replicated` writes so that WAIT has a write of its own connection to
# wait for; it holds a count of confirmed submissions and nothing else reads it.
REPLICATION_FENCE_KEY = "m2fp:replication-fence"


def redis_client(target: Union[Settings, str], socket_timeout: float = 10, retries: int = 6) -> redis.Redis:
    """A client that rides out a Redis restart or a Sentinel failover: short timeouts,
    retried with backoff. ``target`` is the settings (Sentinel or ``REDIS_URL``) or a URL.

    Workers keep the defaults (a job may wait out a restart); the API passes a small
    budget so that a hung Redis gives its client a 503 well inside gunicorn's worker
    timeout instead of a killed worker and a dropped connection. Behind Sentinel each
    retry asks the sentinels for the master again, so a retry after a failover reaches the
    promoted replica (and a connection to a demoted master fails over instead of writing
    to a replica).
    """
    options: dict[str, Any] = dict(
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(5, socket_timeout),
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    if isinstance(target, str):
        return redis.Redis.from_url(target, **options)
    if not target.redis_sentinels:
        return redis.Redis.from_url(target.redis_url, **options)
    sentinel = Sentinel(target.sentinel_addresses(), sentinel_kwargs=_sentinel_kwargs(target, socket_timeout))
    return sentinel.master_for(target.redis_master_name, db=target.redis_db, password=target.redis_password,
                               **options)


def _sentinel_kwargs(settings: Settings, socket_timeout: float) -> dict[str, Any]:
    """How to talk to the sentinels themselves: their own password, and timeouts short
    enough that a dead sentinel is skipped for the next one."""
    kwargs: dict[str, Any] = {"socket_timeout": min(2, socket_timeout), "socket_connect_timeout": min(2, socket_timeout)}
    if settings.redis_sentinel_password:
        kwargs["password"] = settings.redis_sentinel_password
    return kwargs


def broker_url(settings: Settings) -> str:
    """Celery's broker URL: ``REDIS_URL``, or kombu's ``sentinel://`` list (the master's
    password and database ride in each entry, as kombu reads them)."""
    if not settings.redis_sentinels:
        return settings.redis_url
    auth = f":{quote(settings.redis_password, safe='')}@" if settings.redis_password else ""
    return ";".join(f"sentinel://{auth}{_host(host)}:{port}/{settings.redis_db}"
                    for host, port in settings.sentinel_addresses())


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """What kombu's Sentinel transport needs besides the URL; nothing for plain Redis."""
    if not settings.redis_sentinels:
        return {}
    return {"master_name": settings.redis_master_name, "sentinel_kwargs": _sentinel_kwargs(settings, 10)}


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def confirm_replicated(client: redis.Redis, replicas: int, timeout_ms: int) -> int:
    """Wait until ``replicas`` replicas hold every write this process made so far (Redis
    ``WAIT``), for at most ``timeout_ms``; return how many confirmed.

    WAIT waits for the writes of its own connection, so it follows a small write on the
    same connection (a pipeline is one connection). Replication is one ordered stream: a
    replica that holds this write holds every write acknowledged to us before it (the
    job's record, its queue entry, its Celery message), so a failover to that replica
    cannot lose the job.
    """
    with client.pipeline(transaction=False) as pipe:
        pipe.incr(REPLICATION_FENCE_KEY)
        pipe.execute_command("WAIT", replicas, timeout_ms)
        _, confirmed = pipe.execute()
    return int(confirmed)
