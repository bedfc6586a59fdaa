"""The web page at ``/``: submit photos and look at their results in a browser.

Plain files in ``api/static`` (no build step, nothing loaded from the internet),
served by Flask's own static route. The page is a client like any other: it calls the
public JSON API only (``/v1/jobs`` and its outputs), with the key the user enters.

Every URL of the page and its script is relative to the page's ``<base>``, which this
route writes: the service's root path as the request names it (``request.script_root``
and ``/``: ``/`` here, the path prefix behind a proxy that forwards one and is trusted,
see TRUSTED_PROXIES, and which api.app keeps to plain path segments). The page then works under any prefix, also at the prefix without its
trailing slash (``/parse`` answered by the service's ``/``), where URLs relative to the
page's own address would leave the prefix.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, request
from markupsafe import escape

from api.openapi import MediaResponse, spec

page = Blueprint("page", __name__)
# The base of index.html as shipped (the page's own directory), replaced when served.
BASE = '<base href="./">'


@page.get("/")
@spec.validate(tags=["documentation"], resp=MediaResponse(HTTP_200=(None, "the page"), media={
    "200": {"text/html": {"schema": {"type": "string"}}}}))
def index():
    """A web page that submits photos and shows their parsing (uses the public API only)"""
    # Read, not sent as a file: spectree reads every response body, which a file passthrough has not.
    html = (Path(current_app.static_folder) / "index.html").read_text()
    if html.count(BASE) != 1:
        raise RuntimeError(f"api/static/index.html must hold {BASE} once: the page's URLs are relative to it")
    # The path only: resolved against the address the browser used, so a proxy that
    # forwards no scheme or port cannot make it wrong.
    return Response(html.replace(BASE, f'<base href="{escape(request.script_root)}/">'), mimetype="text/html")
