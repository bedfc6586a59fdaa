"""Health routes for orchestrators, load balancers and operators.

``/healthz`` asks the process alone, and is what an orchestrator should probe, for
liveness and for readiness alike (deploy/base/api.yaml): Redis and the store are shared
by every API replica, so a readiness that asked them would take every replica out of
the load balancer at once during a Redis failover, and clients would get the balancer's
own error instead of the API's ``503`` with ``Retry-After``. ``/readyz`` asks Redis and
the store, for operators and monitoring: what the API cannot reach right now.
"""
from __future__ import annotations

import logging
from typing import Callable

from flask import Blueprint, current_app
from spectree import Response

from m2fp_contract.schema import Health, Readiness
from api.openapi import spec

log = logging.getLogger(__name__)

health = Blueprint("health", __name__)


@health.get("/healthz")
@spec.validate(tags=["operations"], resp=Response(HTTP_200=(Health, "the process is up")))
def healthz():
    """Liveness and readiness: the process is up and serving; checks nothing else on purpose

    Redis or the store being away does not fail it: the API then answers `503` with
    `Retry-After` itself, which is what clients should get.
    """
    return {"status": "ok"}


@health.get("/readyz")
@spec.validate(tags=["operations"], resp=Response(HTTP_200=(Readiness, "ready to accept jobs"),
                                                   HTTP_503=(Readiness, "Redis or the store is unavailable")))
def readyz():
    """Readiness of the dependencies: Redis answers and the store is usable

    For operators and monitoring, not for an orchestrator's readiness probe (that is
    `/healthz`): every replica shares Redis and the store, so this fails for all of them
    at once. Each check answers `ok` or `unavailable`; why one is unavailable (hosts,
    ports, the error) goes to the API's log only, since anyone may call this route.
    """
    services = current_app.extensions["m2fp"]
    checks = {"redis": _check("redis", services.redis.ping), "storage": _check("storage", services.storage.ping)}
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503


def _check(name: str, probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:
        log.warning("readiness: %s is unavailable: %s: %s", name, type(exc).__name__, exc)
        return "unavailable"
    return "ok"
