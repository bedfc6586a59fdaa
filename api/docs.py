"""The published contract: the OpenAPI document and a human-readable page of it.

The page is Swagger UI from the ``offapi`` package (spectree's offline templates): its
scripts are inlined from files installed with the API, so the page works where the
deployment has no internet access. Swagger UI's one outbound default is turned off: its
online validator badge, which on any host but localhost loads an image from
validator.swagger.io with this document's URL in it (``validatorUrl: null``).

Behind a proxy that serves the API under a path prefix (and is trusted, TRUSTED_PROXIES),
the page names the document under that prefix, and the document names the prefix as its
server, so that Swagger UI's "Try it out" calls go through the proxy too. Both come
from the request (``request.script_root``); without a prefix the document has no
``servers`` (OpenAPI's default, ``/``).
"""
from __future__ import annotations

import json
from functools import cache

from flask import Blueprint, Response, jsonify, request
from offapi import OpenAPITemplate

from api.openapi import MediaResponse, openapi_document, spec

DOCUMENT_URL = "/v1/openapi.json"
docs = Blueprint("docs", __name__)


@docs.get(DOCUMENT_URL)
@spec.validate(tags=["documentation"], resp=MediaResponse(HTTP_200=(None, "this document"), media={
    "200": {"application/json": {"schema": {"type": "object"}}}}))
def document():
    """The OpenAPI 3.1 document of this API"""
    prefix = request.script_root
    if not prefix:
        return jsonify(openapi_document())
    # A path, resolved against this document's own URL: right whatever scheme and host the client used.
    return jsonify({**openapi_document(), "servers": [{"url": prefix}]})


# Swagger UI's options, set in the template's SwaggerUIBundle({...}) call.
LAYOUT = 'layout: "StandaloneLayout",'
OFFLINE_OPTIONS = "validatorUrl: null,"
DOCUMENT_OPTION = f"url: '{DOCUMENT_URL}',"


@cache
def _page() -> tuple[str, str]:
    """The page before and after the document's URL (written for each request)."""
    html = OpenAPITemplate.SWAGGER.value.format(spec_url=DOCUMENT_URL, spec_path="docs",
                                                **spec.config.swagger_oauth2_config())
    # An offapi release changed its template: look again at its options.
    if html.count(LAYOUT) != 1:
        raise RuntimeError("offapi's Swagger UI template changed; cannot switch off its online validator")
    if html.count(DOCUMENT_OPTION) != 1:
        raise RuntimeError("offapi's Swagger UI template changed; cannot name the document under a path prefix")
    html = html.replace(LAYOUT, f"{LAYOUT}\n        {OFFLINE_OPTIONS}")
    before, after = html.split(DOCUMENT_OPTION)
    return before + "url: ", "," + after


@docs.get("/docs")
@spec.validate(tags=["documentation"], resp=MediaResponse(HTTP_200=(None, "the page"), media={
    "200": {"text/html": {"schema": {"type": "string"}}}}))
def page():
    """A human-readable page of this document (Swagger UI, no external URL)"""
    before, after = _page()
    url = request.script_root + DOCUMENT_URL
    # A JavaScript string inside <script>: no character of it can end the script element.
    literal = json.dumps(url).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Response(before + literal + after, mimetype="text/html")
