"""The web page at ``/``: submit photos and look at their results in a browser.

Plain files in ``api/static`` (no build step, nothing loaded from the internet),
served by Flask's own static route. The page is a client like any other: it calls the
public JSON API only (``/v1/jobs`` and its outputs), with the key the user enters.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app

from api.openapi import MediaResponse, spec

page = Blueprint("page", __name__)


@page.get("/")
@spec.validate(tags=["documentation"], resp=MediaResponse(HTTP_200=(None, "the page"), media={
    "200": {"text/html": {"schema": {"type": "string"}}}}))
def index():
    """A web page that submits photos and shows their parsing (uses the public API only)"""
    # Read, not sent as a file: spectree reads every response body, which a file passthrough has not.
    return Response((Path(current_app.static_folder) / "index.html").read_text(), mimetype="text/html")
