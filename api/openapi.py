"""The OpenAPI 3.1 document, generated from the pydantic models of :mod:`m2fp_contract.schema`.

spectree (its Flask plugin) validates each decorated view's request against the
models and collects them into the document; it takes JSON and multipart bodies on
the same operation and picks the model by content type, which our submission routes
need. What spectree cannot say by itself is added in :func:`openapi_document`: the
table of error codes (each with its status and meaning), the headers some answers carry,
the 500 every operation may answer, the 405 of a method a path does not have, the
format of the path parameters, and the outputs: one Flask route serves every output
by name, and the document gives each output its own path, so that each can say its
media type and body (:func:`_one_path_per_output`). spectree declares its
validation error (400) on every operation; operations without a request model, which
cannot fail validation and never answer 400 otherwise, lose it there (spectree has no
per-route switch for it).
Validation failures are raised as our own :class:`ServiceError`, so they render like
every other error (``api.errors``).
"""
from __future__ import annotations

import copy
from functools import cache
from typing import Any, Optional

from pydantic import ValidationError
from spectree import Response, SpecTree
from spectree.model_adapter.pydantic_adapter import PydanticModelAdapter
from spectree.response import DEFAULT_CODE_DESC

from m2fp_contract.errors import ErrorCode, ServiceError
from pydantic import BaseModel

from m2fp_contract.schema import (JOB_ID_PATTERN, OUTPUT_MODELS, OUTPUTS, TRYON_FILES, TRYON_SIZES, BatchItem,
                                  ErrorResponse, SubmitHeaders, output_media_type)
from api.errors import ERROR_CODES

API_VERSION = "1.0.0"
DESCRIPTION = """\
Multi-person human parsing (M2FP, 20 CIHP classes) as a job queue. Submit a photo
(multipart upload) or a reference to an object in a readable bucket (JSON); the answer
comes at once with a job id; poll the job until it is `succeeded` or `failed`; download
the outputs. Or name a `webhook` in the submission: each event you pick (`running`,
`succeeded`, `failed`, `canceled`) is POSTed to it as the job's JSON, signed after the
Standard Webhooks convention with your tenant's secret (`GET /v1/webhooks/secret`).
Every error is `{"error": {"code", "message"}}` with a stable `code` (schema
`ErrorCode` lists each one with its HTTP status). A method a path does not list answers
`405 method_not_allowed` with `Allow` naming the ones it has (response
`MethodNotAllowed`).

The model's licence: M2FP's code is CC BY-NC 4.0 and the official weights are for
non-commercial use.
"""
JSON_TYPES = ("application/json",)
# The routes that take a JSON or multipart body (the others take none).
BODY_ENDPOINTS = frozenset({"jobs.create_job", "jobs.create_jobs", "demo.api_parse", "demo.parse"})
# Multipart only: an image is a file part, which a urlencoded form cannot carry, so any
# other body is answered as one without an image.
FORM_TYPES = ("multipart/form-data",)


class _Adapter(PydanticModelAdapter):
    """spectree serialises a validation error before our hook sees it; leave the input
    out (an uploaded file in it cannot be serialised, and it may be large)."""

    def validation_errors(self, err: ValidationError) -> Any:
        return err.errors(include_input=False, include_url=False, include_context=False)


def validation_failed(error: ValidationError) -> ServiceError:
    """The stable code of a request that does not match its model."""
    first = error.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    message = f"{where}: {first['msg']}" if where else first["msg"]
    codes = {code.value for code in ErrorCode}
    if first["type"] in codes:  # raised by a validator of m2fp_contract.schema with its own code
        return ServiceError(first["msg"], ErrorCode(first["type"]))
    field = first["loc"][0] if first["loc"] else None
    if first["type"] == "too_long" and field in ("items", "image"):
        return ServiceError(f"at most {first['ctx']['max_length']} items per batch", ErrorCode.BATCH_TOO_LARGE)
    if field in ("webhook", "webhook_events"):
        return ServiceError(message, ErrorCode.INVALID_WEBHOOK)
    if field == "source":
        return ServiceError(f'send {{"source": "s3://bucket/key"}} or a multipart image ({message})',
                            ErrorCode.INVALID_SOURCE)
    if field in ("image", "file") and first["type"] in ("missing", "too_short"):
        return ServiceError(f"send the image as multipart/form-data in the field '{field}'", ErrorCode.MISSING_IMAGE)
    return ServiceError(message, ErrorCode.BAD_REQUEST)


def _before(request: Any, _response: Any, error: Optional[ValidationError], _instance: Any, _adapter: Any) -> None:
    """Runs after spectree validated the request, before the view."""
    body_route = request.endpoint in BODY_ENDPOINTS
    if body_route and request.mimetype in JSON_TYPES and not isinstance(request.get_json(silent=True), dict):
        raise ServiceError("the body is not a JSON object", ErrorCode.BAD_REQUEST)
    if body_route and request.mimetype not in JSON_TYPES + FORM_TYPES:
        # Neither encoding: as if an empty form had been sent.
        field = "file" if request.endpoint == "demo.api_parse" else "image"  # the demo's own field name
        raise ServiceError(f"send the image as multipart/form-data in the field '{field}'", ErrorCode.MISSING_IMAGE)
    if error is not None:
        raise validation_failed(error)


spec = SpecTree(
    "flask",
    title="m2fp-queue",
    version=API_VERSION,
    description=DESCRIPTION,
    before=_before,
    model_adapter=_Adapter(),
    validation_error_status=400,
    validation_error_model=ErrorResponse,
    page_templates={},  # the docs page is ours (api/docs.py), served from shipped files
    path="_spectree",  # never registered: the document is served at /v1/openapi.json
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
)


def errors(*codes: ErrorCode) -> dict[str, tuple[type, str]]:
    """spectree responses for these error codes, one per status, naming the codes."""
    by_status: dict[int, list[ErrorCode]] = {}
    for code in codes:
        status = ERROR_CODES[code].status
        assert status is not None, f"{code} is never an HTTP answer"
        by_status.setdefault(status, []).append(code)
    return {f"HTTP_{status}": (ErrorResponse, "; ".join(f"`{c.value}`: {ERROR_CODES[c].when}" for c in group))
            for status, group in sorted(by_status.items())}


class MediaResponse(Response):
    """A spectree response that also declares non-JSON content (an output file)."""

    def __init__(self, *codes: str, media: Optional[dict[str, dict]] = None, **models: Any) -> None:
        super().__init__(*codes, **models)
        self.media = media or {}

    def generate_spec(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        responses = super().generate_spec(*args, **kwargs)
        for status, content in self.media.items():
            responses.setdefault(status, {"description": "the file"})["content"] = content
        return responses


def _error_code_schema() -> dict[str, Any]:
    return {
        "title": "ErrorCode",
        "description": "Every error code; HTTP status and when it happens. Codes marked 'a job's error' appear "
                       "only in a failed job's `error`.",
        "type": "string",
        "oneOf": [{"const": code.value,
                   "description": (f"HTTP {info.status}: " if info.status else "") + info.when}
                  for code, info in ERROR_CODES.items()],
    }


def _error_response(*codes: ErrorCode) -> dict[str, Any]:
    return {"description": "; ".join(f"`{code.value}`: {ERROR_CODES[code].when}" for code in codes),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": schema}


# Headers by the status of the answer that carries them (api/errors.py sends them).
STATUS_HEADERS: dict[str, dict[str, dict[str, Any]]] = {
    "401": {"WWW-Authenticate": _header('how to authenticate: `Bearer realm="m2fp"`', {"type": "string"})},
    "429": {"Retry-After": _header("seconds to wait before sending the request again",
                                   {"type": "integer", "minimum": 1})},
    "503": {"Retry-After": {**_header("seconds to wait before sending the request again (with `queue_unavailable` "
                                      "and `storage_unavailable`)", {"type": "integer", "minimum": 1}),
                            "required": False}},
}
# Headers of one operation's answers: (path, method) -> status -> headers (api/routes.py sends them).
OPERATION_HEADERS: dict[tuple[str, str], dict[str, dict[str, dict[str, Any]]]] = {
    ("/v1/jobs", "post"): {status: {
        "Location": _header("the job's path, `/v1/jobs/<id>`", {"type": "string"}),
        "Preference-Applied": {**_header("with `Prefer: wait=N`: the wait honoured, `wait=N`", {"type": "string"}),
                               "required": False}}
        for status in ("200", "202")},
    **{(path, "post"): {status: {"Location": _header("the job's path, `/v1/jobs/<id>`", {"type": "string"})}
                        for status in statuses}
       for path, statuses in (("/api/parse", ("200", "202")), ("/parse", ("202",)))},
}
# Request headers an operation reads, by the contract's model of them: (path, method) -> model
# (api/routes.py reads them; the demo's routes take no Prefer: they always wait SYNC_WAIT_SECONDS).
OPERATION_REQUEST_HEADERS: dict[tuple[str, str], type[BaseModel]] = {("/v1/jobs", "post"): SubmitHeaders}


def _header_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """``model``'s fields as header parameters, named by their alias (the header's name): an
    optional field is a header that may be absent, never one sent as null."""
    schema = model.model_json_schema(by_alias=True)
    parameters = []
    for name, field in schema["properties"].items():
        value = {key: item for key, item in field.items() if key not in ("title", "description", "default", "anyOf")}
        for option in field.get("anyOf", []):
            if option.get("type") != "null":
                value |= option
        parameters.append({"name": name, "in": "header", "required": name in schema.get("required", []),
                           "description": field.get("description", ""), "schema": value})
    return parameters


# What a path parameter may be, by name (a job id is new_job_id's 22 URL-safe characters).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "job_id": {"type": "string", "pattern": JOB_ID_PATTERN},
}
# The route of every output (api/routes.py), published as one path per output name.
OUTPUT_ROUTE = "/v1/jobs/{job_id}/outputs/{name}"


def _complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    takes_input = "requestBody" in operation or any(p["in"] != "path" for p in operation.get("parameters", []))
    if not takes_input and responses.get("400", {}).get("description") == DEFAULT_CODE_DESC["HTTP_400"]:
        del responses["400"]  # spectree's validation error, on an operation with nothing to validate
    responses["500"] = _error_response(ErrorCode.INTERNAL_ERROR)
    for status, response in responses.items():
        headers = {**STATUS_HEADERS.get(status, {}), **OPERATION_HEADERS.get((path, method), {}).get(status, {})}
        if headers:
            response["headers"] = headers
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path" and parameter["name"] in PATH_PARAMETERS:
            parameter["schema"] = PATH_PARAMETERS[parameter["name"]]
    if (path, method) in OPERATION_REQUEST_HEADERS:
        operation.setdefault("parameters", []).extend(_header_parameters(OPERATION_REQUEST_HEADERS[path, method]))


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    """``model`` and the models it nests, as components (refs to each other)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


def _output_content(name: str) -> dict[str, Any]:
    """An output's one media type, with its JSON body's model or as bytes."""
    model = OUTPUT_MODELS.get(name)
    schema = {"$ref": f"#/components/schemas/{model.__name__}"} if model else {"type": "string", "format": "binary"}
    return {output_media_type(name): {"schema": schema}}


def _path_parameter(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


# The outputs a submission asks for (``outputs``), published beside the standard five:
# path under outputs/ -> (an example name, for its media type and body; its extra path
# parameters; what it is).
_SIZE = _path_parameter("size", "the photo's own size, or 768x1024 (letterboxed)", {"type": "string",
                                                                                   "enum": list(TRYON_SIZES)})
GROUP_OUTPUT_PATHS: dict[str, tuple[str, list[dict[str, Any]], str]] = {
    "keypoints.json": ("keypoints.json", [], "keypoints (BODY_25), asked with outputs keypoints or tryon"),
    "keypoints_coco18.json": ("keypoints_coco18.json", [], "keypoints (COCO-18), asked with keypoints or tryon"),
    "masks/{mask}": ("masks/face.png", [_path_parameter(
        "mask", "a class's slug and .png, e.g. upperclothes.png (outputs masks)",
        {"type": "string", "pattern": r"^[a-z0-9-]{1,40}\.png$"})], "one class's binary mask"),
    "cloth_mask.png": ("cloth_mask.png", [], "every garment pixel white on black (outputs garments)"),
    "cutouts/{person}/{cutout}": ("cutouts/person-1/hat.png", [
        _path_parameter("person", "person-<id>, the id as in persons.png", {"type": "string",
                                                                            "pattern": r"^person-(?:[1-9][0-9]?|1[0-9][0-9]|2[0-4][0-9]|25[0-5])$"}),
        _path_parameter("cutout", "a garment class's slug and .png", {"type": "string",
                                                                      "pattern": r"^[a-z0-9-]{1,40}\.png$"})],
        "one garment of one person, RGBA, cropped to its box (outputs garments)"),
    **{f"tryon/{{size}}/{file}": (f"tryon/photo/{file}", [_SIZE], f"try-on pack: {file} (outputs tryon)")
       for file in TRYON_FILES},
}


def _one_path_per_output(paths: dict[str, Any]) -> dict[str, Any]:
    """``OUTPUT_ROUTE`` as one path per output, each with its own media type and body
    (``result.json`` a JSON document, the maps PNG, the overlay JPEG), in its place.

    One operation with a ``name`` parameter could only list every media type for every
    name, and a generated client could not tell which body a name brings back; the
    URLs are the same either way."""
    published: dict[str, Any] = {}
    for path, operations in paths.items():
        if path != OUTPUT_ROUTE:
            published[path] = operations
            continue
        for name in OUTPUTS:
            operation = copy.deepcopy(operations["get"])
            operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "name"]
            operation["operationId"] = f"download_{name.replace('.', '_')}"
            operation["summary"] = f"Download {name} of a finished job"
            operation["responses"]["200"] = {"description": f"{name} ({OUTPUTS[name]})",
                                             "content": _output_content(name)}
            published[OUTPUT_ROUTE.replace("{name}", name)] = {"get": operation}
        for path_name, (example, parameters, what) in GROUP_OUTPUT_PATHS.items():
            operation = copy.deepcopy(operations["get"])
            operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "name"] + parameters
            operation["operationId"] = "download_" + "_".join(part.strip("{}").replace(".", "_").replace("-", "_")
                                                              for part in path_name.split("/"))
            operation["summary"] = f"Download {path_name} of a finished job"
            operation["responses"]["200"] = {"description": what, "content": _output_content(example)}
            published[OUTPUT_ROUTE.replace("{name}", path_name)] = {"get": operation}
    return published


@cache
def openapi_document() -> dict[str, Any]:
    """The full document (built once, after every route is registered)."""
    document = copy.deepcopy(spec.spec)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorCode"] = _error_code_schema()
    schemas["ErrorDetail"]["properties"]["code"] = {"$ref": "#/components/schemas/ErrorCode"}
    for model in (BatchItem, *OUTPUT_MODELS.values()):
        _add_model(schemas, model)
    schemas["BatchJson"]["properties"]["items"]["items"] = {"$ref": "#/components/schemas/BatchItem"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            _complete_operation(path, method, operation)
    document["paths"] = _one_path_per_output(document["paths"])
    document["components"]["responses"] = {"MethodNotAllowed": {
        **_error_response(ErrorCode.METHOD_NOT_ALLOWED),
        "headers": {"Allow": _header("the methods the path has", {"type": "string"})}}}
    document["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "an API key (API_KEYS / API_KEYS_FILE); needed once the service has keys"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the same key, "
                   "for clients that cannot set Authorization"},
    }
    return document
