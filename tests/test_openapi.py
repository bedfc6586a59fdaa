"""The published contract: the OpenAPI document describes every route, every error
code and both request encodings; the docs page works offline; the API side never
loads the model side."""
import io
import re
import subprocess
import sys
import threading

import pytest
from werkzeug.serving import make_server

from api.app import create_app
from api.errors import ERROR_CODES
from api.openapi import OUTPUT_ROUTE
from m2fp_contract.errors import ErrorCode
from common.jobs import OUTPUTS, new_job_id
from common.services import Services
from scripts.imagegen import photo_jpeg
from scripts.processes import REPO
from tests.test_page import browser  # noqa: F401 (the page test's headless Chromium, a fixture)

# Flask's own static route: the files of the page at `/` (api/static), not part of the JSON
# API. `/` itself is documented, as /docs is.
DOCUMENTED_ELSEWHERE = {"static"}


@pytest.fixture()
def app(settings):
    return create_app(services=Services.create(settings))


@pytest.fixture()
def document(app):
    response = app.test_client().get("/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def published_paths(rule: str) -> list[str]:
    """The document's paths of a Flask rule: the outputs' route is one path per output."""
    path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)
    return [path.replace("{name}", name) for name in OUTPUTS] if path == OUTPUT_ROUTE else [path]


def test_every_route_and_method_is_in_the_document(app, document):
    assert document["openapi"].startswith("3.1")
    for rule in app.url_map.iter_rules():
        if rule.endpoint in DOCUMENTED_ELSEWHERE:
            continue
        for path in published_paths(rule.rule):
            assert path in document["paths"], f"route {rule.rule} is missing from the OpenAPI document"
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                operation = document["paths"][path].get(method.lower())
                assert operation, f"{method} {path} is missing from the OpenAPI document"
                assert operation["responses"] and operation.get("summary"), f"{method} {path} is undescribed"
                assert {name for name in re.findall(r"{(\w+)}", path)} == {
                    p["name"] for p in operation["parameters"] if p["in"] == "path"}, f"{method} {path}"
    operation_ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(operation_ids) == len(set(operation_ids))


def test_each_output_is_declared_with_its_own_media_type_and_body(document):
    schemas = document["components"]["schemas"]
    declared = {}
    for name in OUTPUTS:
        [(media, content)] = document["paths"][f"/v1/jobs/{{job_id}}/outputs/{name}"]["get"]["responses"]["200"][
            "content"].items()
        declared[name] = (media, content["schema"])
    binary = {"type": "string", "format": "binary"}
    assert declared == {"colored.png": ("image/png", binary), "labels.png": ("image/png", binary),
                        "persons.png": ("image/png", binary), "overlay.jpg": ("image/jpeg", binary),
                        "result.json": ("application/json", {"$ref": "#/components/schemas/ResultDocument"})}
    result = schemas["ResultDocument"]
    assert {"job_id", "width", "height", "labels", "classes", "legend", "people", "model"} <= set(result["required"])
    assert result["properties"]["classes"]["items"] == {"$ref": "#/components/schemas/ClassFound"}
    assert {"ClassFound", "LegendEntry", "PersonFound", "PersonPart"} <= set(schemas)


def test_every_error_code_is_documented_with_its_status(document):
    documented = {entry["const"]: entry["description"]
                  for entry in document["components"]["schemas"]["ErrorCode"]["oneOf"]}
    assert set(documented) == {code.value for code in ErrorCode}
    for code, info in ERROR_CODES.items():
        if info.status:
            assert documented[code.value].startswith(f"HTTP {info.status}: ")
    # Each status an operation can answer with names its codes, and every API code is answerable somewhere:
    # an operation's response, or (405, for a method a path does not have) a response of the components.
    responses = [response for path in document["paths"].values() for operation in path.values()
                 for response in operation["responses"].values()]
    described = " ".join(response["description"] for response in
                         responses + list(document["components"]["responses"].values()))
    for code, info in ERROR_CODES.items():
        if info.status:
            assert f"`{code.value}`" in described, f"no operation documents {code.value}"


def operations(document):
    return [(path, method, operation) for path, methods in document["paths"].items()
            for method, operation in methods.items()]


def test_every_operation_may_answer_500_and_only_those_that_validate_input_400(document):
    for path, method, operation in operations(document):
        responses = operation["responses"]
        assert "`internal_error`" in responses["500"]["description"], f"{method} {path}"
        takes_input = "requestBody" in operation or any(p["in"] != "path" for p in operation["parameters"])
        if not takes_input:  # nothing to fail validation: a 400 must be one the route declared, with its codes
            assert "400" not in responses or "`" in responses["400"]["description"], f"{method} {path}"
    for path in ("/healthz", "/readyz", "/docs", "/", "/metrics", "/v1/openapi.json", "/v1/jobs/{job_id}",
                 "/v1/jobs/{job_id}/cancel", *published_paths(OUTPUT_ROUTE)):
        assert "400" not in next(iter(document["paths"][path].values()))["responses"], path
    assert "`webhooks_disabled`" in document["paths"]["/v1/webhooks/secret"]["get"]["responses"]["400"]["description"]


def test_the_headers_answers_carry_are_declared(document):
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            headers = set(response.get("headers", {}))
            if status == "401":
                assert "WWW-Authenticate" in headers, f"{method} {path}"
            if status == "429":
                assert "Retry-After" in headers, f"{method} {path}"
            located = {("/v1/jobs", "200"), ("/v1/jobs", "202"), ("/api/parse", "200"), ("/api/parse", "202"),
                       ("/parse", "202")}  # the answers that name a job: a submission's
            assert ("Location" in headers) == (method == "post" and (path, status) in located), (path, status)
    assert "Allow" in document["components"]["responses"]["MethodNotAllowed"]["headers"]


def test_path_parameters_say_what_they_may_be(document):
    [job_id] = document["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"]
    schemas = {job_id["name"]: job_id["schema"]}
    assert all(re.fullmatch(schemas["job_id"]["pattern"].strip("^$"), new_job_id()) for _ in range(100))
    for path, method, operation in operations(document):
        for parameter in operation["parameters"]:
            if parameter["name"] == "job_id":
                assert parameter["schema"] == schemas["job_id"], f"{method} {path}"


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/jobs/batch"])
def test_submissions_document_both_encodings(document, path):
    content = document["paths"][path]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    form = document["components"]["schemas"][content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    image = form["properties"]["image"]
    assert (image.get("items") or image)["format"] == "binary"


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/jobs/batch"])
def test_a_urlencoded_form_is_not_an_encoding_the_api_takes(app, path):
    # It cannot carry a file: answered as any body without an image, whatever its fields say.
    answer = app.test_client().post(path, data="priority=interactive&labels=none-such",
                                    content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "missing_image"


def test_docs_page_is_served_from_shipped_files(app):
    page = app.test_client().get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/v1/openapi.json" in html and "SwaggerUIBundle" in html
    assert not re.findall(r"""(?:src|href)\s*=\s*["']https?://""", html), "the page loads something from the web"
    # Swagger UI's online validator badge is off (it would send the document's URL to validator.swagger.io).
    assert re.search(r"SwaggerUIBundle\(\{[^}]*validatorUrl: null,", html)


def test_the_docs_page_on_a_public_host_reaches_no_other_host(app, browser):  # noqa: F811
    # Swagger UI shows its validator badge (an image from validator.swagger.io) unless the
    # page's own address says localhost or 127.0.0.1: serve it from another loopback address.
    server = make_server("127.0.0.2", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.2:{server.server_port}"
    context = browser.new_context()
    elsewhere: list[str] = []

    def only_this_host(route):
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    try:
        context.route("**/*", only_this_host)
        page = context.new_page()
        page.goto(f"{origin}/docs")
        page.locator(".opblock").first.wait_for()  # the document loaded and rendered
        links = page.eval_on_selector_all("[src], [href]", "nodes => nodes.map(n => n.src || n.href)")
    finally:
        context.close()
        server.shutdown()
    assert not [link for link in links if re.match("https?://", link) and not link.startswith(origin)], links
    assert not elsewhere


def test_the_api_never_imports_the_model_side():
    probe = ("import sys; from api.app import create_app; import api.wsgi; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'worker', 'torch', 'numpy', 'openvino'}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         env={"REDIS_URL": "redis://127.0.0.1:9/0", "LOCAL_STORE_DIR": "/tmp/m2fp-probe-store",
                              "PATH": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['numpy']"], out.stdout  # numpy: Pillow's image checks, not the model


def test_the_docs_error_table_names_every_code_with_its_status():
    page = (REPO / "docs" / "api.md").read_text()
    table = page[page.index("| Error code | HTTP | When |"):]
    table = table[:table.index("\n\n")]
    for code, info in ERROR_CODES.items():
        rows = [row for row in table.splitlines() if f"`{code.value}`" in row]
        assert rows, f"docs/api.md's error table lacks {code.value}"
        if info.status:
            assert any(str(info.status) in row for row in rows), f"docs/api.md gives {code.value} another status"


def test_an_open_service_says_so_once_per_process_at_start(settings, caplog):
    with caplog.at_level("WARNING", logger="api"):
        create_app(services=Services.create(settings))
    warnings = [r.getMessage() for r in caplog.records if r.name == "api"]
    assert len(warnings) == 1 and "no API keys configured" in warnings[0]


def test_the_prefer_header_is_declared_where_it_is_read_and_does_what_it_says(settings):
    app = create_app(services=Services.create(settings.model_copy(update={"sync_wait_seconds": 0.2})))
    client = app.test_client()
    document = client.get("/v1/openapi.json").get_json()
    declared = {(path, method): parameter for path, method, operation in operations(document)
                for parameter in operation["parameters"] if parameter["in"] == "header"
                and parameter["name"].lower() == "prefer"}
    # POST /v1/jobs reads it (RFC 7240: wait=N, respond-async); the demo's routes always wait SYNC_WAIT_SECONDS
    assert list(declared) == [("/v1/jobs", "post")]
    prefer = declared["/v1/jobs", "post"]
    assert prefer["required"] is False and prefer["schema"]["type"] == "string"
    assert "wait=N" in prefer["description"] and "respond-async" in prefer["description"]
    # Each example means what the description says: no worker runs, so a wait is its whole
    # length, capped at SYNC_WAIT_SECONDS (0.2 here), and answered 202 with the job as it stands.
    examples = prefer["schema"]["examples"]
    assert {"wait=30", "respond-async"} <= set(examples)
    for seed, example in enumerate(examples):
        answer = client.post("/v1/jobs", data={"image": (io.BytesIO(photo_jpeg(40, 32, seed=8800 + seed)), "p.jpg")},
                             content_type="multipart/form-data", headers={"Prefer": example})
        assert answer.status_code == 202 and answer.get_json()["status"] == "queued", (example, answer.get_json())
        waits = "wait=" in example
        assert answer.headers.get("Preference-Applied") == ("wait=0.2" if waits else None), example
