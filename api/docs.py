"""The published contract: the OpenAPI document and a human-readable page of it.

The page is Swagger UI from the ``offapi`` package (spectree's offline templates): its
scripts are inlined from files installed with the API, so the page works where the
deployment has no internet access. Swagger UI's one outbound default is turned off: its
online validator badge, which on any host but localhost loads an image from
validator.swagger.io with this document's URL in it (``validatorUrl: null``).
"""
from __future__ import annotations

from functools import cache

from flask import Blueprint, Response, jsonify
from offapi import OpenAPITemplate

from api.openapi import MediaResponse, openapi_document, spec

DOCUMENT_URL = "/v1/openapi.json"
docs = Blueprint("docs", __name__)


@docs.get(DOCUMENT_URL)
@spec.validate(tags=["documentation"], resp=MediaResponse(HTTP_200=(None, "this document"), media={
    "200": {"application/json": {"schema": {"type": "object"}}}}))
def document():
    """The OpenAPI 3.1 document of this API"""
    return jsonify(openapi_document())


# Swagger UI's options, set in the template's SwaggerUIBundle({...}) call.
LAYOUT = 'layout: "StandaloneLayout",'
OFFLINE_OPTIONS = "validatorUrl: null,"


@cache
def _page() -> str:
    html = OpenAPITemplate.SWAGGER.value.format(spec_url=DOCUMENT_URL, spec_path="docs",
                                                **spec.config.swagger_oauth2_config())
    if html.count(LAYOUT) != 1:  # an offapi release changed its template: look again at its options
        raise RuntimeError("offapi's Swagger UI template changed; cannot switch off its online validator")
    return html.replace(LAYOUT, f"{LAYOUT}\n        {OFFLINE_OPTIONS}")


@docs.get("/docs")
@spec.validate(tags=["documentation"], resp=MediaResponse(HTTP_200=(None, "the page"), media={
    "200": {"text/html": {"schema": {"type": "string"}}}}))
def page():
    """A human-readable page of this document (Swagger UI, no external URL)"""
    return Response(_page(), mimetype="text/html")
