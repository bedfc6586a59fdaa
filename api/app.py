"""The Flask application factory: ``create_app(settings)``."""
from __future__ import annotations

import logging
from typing import Optional

from flask import Flask

from common.services import Services
from common.settings import Settings, load_settings
from api.docs import docs
from api.errors import register_error_handlers
from api.health import health
from api.metrics import metrics
from api.routes import jobs

# Headroom for the multipart envelope around the image itself.
MULTIPART_OVERHEAD = 64 * 1024
# Redis time budget of one request: a 2 s socket timeout, tried 3 times for job records
# and 4 times for the enqueue, stays well inside gunicorn's default 30 s worker timeout.
REDIS_SOCKET_TIMEOUT = 2
REDIS_RETRIES = 2


def create_app(settings: Optional[Settings] = None, *, services: Optional[Services] = None) -> Flask:
    """Build the API on ``services`` (tests pass their own), else on what ``settings`` name."""
    settings = settings or (services.settings if services else load_settings())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + MULTIPART_OVERHEAD
    app.json.sort_keys = False
    app.extensions["m2fp"] = services or Services.create(
        settings, redis_socket_timeout=REDIS_SOCKET_TIMEOUT, redis_retries=REDIS_RETRIES)
    app.register_blueprint(jobs)
    app.register_blueprint(health)
    app.register_blueprint(docs)
    app.register_blueprint(metrics)
    register_error_handlers(app)
    logging.getLogger("api").setLevel(logging.INFO)
    return app
