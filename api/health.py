"""Liveness and readiness probes for orchestrators and load balancers."""
from __future__ import annotations

from flask import Blueprint

from api.deps import deps

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz():
    """The process is up and serving; checks nothing else on purpose."""
    return {"status": "ok"}


@health.get("/readyz")
def readyz():
    """Ready to accept jobs: Redis answers and the store is usable."""
    checks: dict[str, str] = {}
    try:
        deps().jobs.client.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {exc}"
    try:
        deps().storage.ping()
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"unavailable: {exc}"
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
