"""Liveness and readiness probes for orchestrators and load balancers."""
from __future__ import annotations

from flask import Blueprint, current_app
from spectree import Response

from m2fp_contract.schema import Health, Readiness
from api.openapi import spec

health = Blueprint("health", __name__)


@health.get("/healthz")
@spec.validate(tags=["operations"], resp=Response(HTTP_200=(Health, "the process is up")))
def healthz():
    """Liveness: the process is up and serving; checks nothing else on purpose"""
    return {"status": "ok"}


@health.get("/readyz")
@spec.validate(tags=["operations"], resp=Response(HTTP_200=(Readiness, "ready to accept jobs"),
                                                   HTTP_503=(Readiness, "Redis or the store is unavailable")))
def readyz():
    """Readiness: Redis answers and the store is usable"""
    services = current_app.extensions["m2fp"]
    checks: dict[str, str] = {}
    try:
        services.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {exc}"
    try:
        services.storage.ping()
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"unavailable: {exc}"
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
