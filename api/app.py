"""The Flask application factory: ``create_app(settings)``."""
from __future__ import annotations

import logging
import re
from typing import Callable, Iterable, Optional

from flask import Flask, Request, current_app
from werkzeug.middleware.proxy_fix import ProxyFix

from common.services import Services
from common.settings import Settings, load_settings
from common.webhooks import WebhookPolicy
from api import auth
from api.auth import KeyRing
from api.docs import docs
from api.errors import register_error_handlers
from api.health import health
from api.metrics import metrics
from api.page import page
from api.rate_limit import SubmissionLimiter
from api.demo import demo
from api.routes import jobs
from api.webhooks import webhooks

log = logging.getLogger(__name__)

# Headroom for the multipart envelope around the image itself.
MULTIPART_OVERHEAD = 64 * 1024
# The route whose multipart body may carry many images (MAX_BATCH_BYTES).
BATCH_ENDPOINT = "jobs.create_jobs"
# Redis time budget of one request: a 2 s socket timeout, tried 3 times for job records
# and 4 times for the enqueue, so an outage is answered 503 within seconds.
REDIS_SOCKET_TIMEOUT = 2
REDIS_RETRIES = 2


# A path prefix a proxy may forward: plain path segments. "//evil.example" or
# "/%5Cevil.example" would make the page's <base>, /docs and Location name another host.
_PREFIX = re.compile(r"(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*")


class PlainPrefix:
    """WSGI middleware between ProxyFix and the app: the forwarded path prefix
    (``SCRIPT_NAME``) with runs of slashes collapsed and no trailing one, or none at all
    if it is anything but plain path segments (then links are built from the root)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        prefix = re.sub(r"/+", "/", environ.get("SCRIPT_NAME", "")).rstrip("/")
        if not _PREFIX.fullmatch(prefix):
            log.warning("ignored the forwarded path prefix %r: not plain path segments", prefix[:100])
            prefix = ""
        environ["SCRIPT_NAME"] = prefix
        return self.app(environ, start_response)


class ApiRequest(Request):
    """A request whose body limit is its route's: a multipart batch may carry
    MAX_BATCH_BYTES of files (each still at most MAX_UPLOAD_BYTES), every other request
    one image (``MAX_CONTENT_LENGTH``). JSON batches keep the small limit: they name
    objects, and a JSON body is read whole into memory."""

    @property
    def max_content_length(self) -> Optional[int]:
        if self.endpoint == BATCH_ENDPOINT and self.mimetype == "multipart/form-data":
            return current_app.extensions["m2fp"].settings.max_batch_bytes + MULTIPART_OVERHEAD
        return current_app.config["MAX_CONTENT_LENGTH"]


def create_app(settings: Optional[Settings] = None, *, services: Optional[Services] = None) -> Flask:
    """Build the API on ``services`` (tests pass their own), else on what ``settings`` name."""
    settings = settings or (services.settings if services else load_settings())
    app = Flask(__name__)
    app.request_class = ApiRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + MULTIPART_OVERHEAD
    if settings.trusted_proxies:
        # The scheme, host, port and path prefix the client used, as the proxies in front
        # say (each trusted hop's header counted from the right): request.url_root, and so
        # every link the API writes, names them.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(PlainPrefix(app.wsgi_app), x_for=hops, x_proto=hops, x_host=hops, x_port=hops,
                                x_prefix=hops)
    app.json.sort_keys = False
    services = services or Services.create(settings, redis_socket_timeout=REDIS_SOCKET_TIMEOUT,
                                           redis_retries=REDIS_RETRIES)
    keys = KeyRing.from_settings(settings)
    app.extensions["m2fp"] = services
    app.extensions["m2fp.keys"] = keys
    app.extensions["m2fp.limiter"] = SubmissionLimiter(services.redis, settings.submit_rate_per_minute)
    app.extensions["m2fp.webhook_policy"] = WebhookPolicy.from_settings(settings)
    app.register_blueprint(jobs)
    app.register_blueprint(demo)
    app.register_blueprint(webhooks)
    app.register_blueprint(health)
    app.register_blueprint(docs)
    app.register_blueprint(metrics)
    app.register_blueprint(page)
    register_error_handlers(app)
    if not auth.announced:  # under gunicorn, its master said it once for every worker
        auth.announce(settings, keys)
    return app
