"""Contract tests: schemathesis fuzzes the running API (gunicorn, real Redis, a real
worker) from the API's own OpenAPI document. Every answer must be documented (status,
content type, headers, body schema) and none may be a 5xx, and every operation must
have had at least one success answer checked so (a route whose 2xx body contradicts
the document cannot hide behind 404s).

Generated job ids name no job, so about half the cases of each operation with a job id
(and of ``GET /v1/jobs?ids=``) name real jobs instead (:func:`with_real_jobs`): jobs
that succeeded (their outputs can be downloaded), one held ``running`` inside its
worker's parse (tests/harness/holding_engine.py) and jobs queued behind it (each can be
canceled once).

About half of the multipart submissions carry real JPEG files in place of the generated
``image`` bytes (:func:`with_real_photos`), so accepted submissions (202, and 200 for
content already submitted) are checked against the document too; the other half keep
what schemathesis generated, which the API refuses as images it cannot decode.

Bounded for the suite's time budget: ``CONTRACT_EXAMPLES`` generated cases per
operation and phase (default 25), and ``CONTRACT_SECONDS`` (default 60) from the first
request: cases generated after that are not sent, except to an operation that has not
yet answered a success (at most its generated cases), and the summary says how many.
What ran (requests per operation, status and error code, and the items of batch
answers) is printed in the session's summary.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from m2fp_contract.schema import TRYON_FILES, TRYON_SIZES
from scripts.imagegen import ASTRONAUT, astronaut_body, photo_jpeg
from scripts.processes import wait_until
from scripts.stack import Stack, local_system
from tests.harness import HARNESS_APP, HOLD_FILE_VARIABLE

EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "25"))
SECONDS = float(os.environ.get("CONTRACT_SECONDS", "60"))
RAN: Counter = Counter()  # (operation, status and error code) -> requests
ITEMS: Counter = Counter()  # status and error code of the items in batch answers -> items
UNSENT: Counter = Counter()  # operation -> cases generated after the time budget was spent
STARTED: list[float] = []  # when the first case was sent
SUCCEEDED: set[str] = set()  # operations that answered a 2xx, checked against the document
# A few small photos: distinct content makes new jobs (202), repeated content finds them (200).
PHOTOS = [photo_jpeg(48, 40, seed=7000 + i) for i in range(3)]
MAX_PHOTOS_PER_BATCH = 3
# Real jobs the cases may name, by status (filled by the live_api fixture).
REAL_JOBS: dict[str, list[str]] = {}
REAL_OUTPUTS: dict[str, list[str]] = {}  # each succeeded real job's output names


def report(write_line) -> None:
    """What the fuzzing ran, for the end of the session (tests/conftest.py calls it)."""
    if not RAN:
        return
    write_line(f"contract fuzzing: {sum(RAN.values())} requests, at most {EXAMPLES} cases per operation and phase"
               + (f", {sum(UNSENT.values())} more not sent: the {SECONDS:.0f} s budget was spent" if UNSENT else ""))
    for operation in sorted({operation for operation, _ in RAN}):
        answers = sorted((answer, count) for (op, answer), count in RAN.items() if op == operation)
        write_line(f"  {operation}: " + ", ".join(f"{answer} x{count}" for answer, count in answers))
    if ITEMS:
        write_line("  items of the batch answers: " + ", ".join(f"{a} x{n}" for a, n in sorted(ITEMS.items())))


def inline_multipart_schemas(raw_schema: dict[str, Any]) -> None:
    """schemathesis sends a multipart property as a file part (with a filename, which the
    API needs) only when it sees the property's schema, not a ``$ref`` to it: inline
    the referenced schema of each multipart body (the same document, spelt out)."""
    schemas = raw_schema.get("components", {}).get("schemas", {})
    for operations in raw_schema.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {}) if isinstance(operation, dict) else {}
            multipart = content.get("multipart/form-data", {})
            ref = multipart.get("schema", {}).get("$ref", "")
            if ref.startswith("#/components/schemas/"):
                multipart["schema"] = copy.deepcopy(schemas[ref.rsplit("/", 1)[1]])


def _pick(value: Any) -> int:
    """A stable choice from a generated value (the same case always maps the same way)."""
    return hashlib.sha256(repr(value).encode()).digest()[0]


def with_real_photos(case):
    """Every other multipart submission carries JPEG files as ``image`` instead of the
    generated bytes."""
    body = case.body
    if case.media_type != "multipart/form-data" or not isinstance(body, dict) or "image" not in body:
        return case
    if _pick(sorted(body.items(), key=lambda item: str(item[0]))) % 2:
        return case
    pick = _pick(body.get("labels"))
    if isinstance(body["image"], list):
        count = min(len(body["image"]), MAX_PHOTOS_PER_BATCH)
        case.body = {**body, "image": [PHOTOS[(pick + i) % len(PHOTOS)] for i in range(count)]}
    else:
        case.body = {**body, "image": PHOTOS[pick % len(PHOTOS)]}
    return case


def with_real_jobs(case):
    """Every other case with a job id names a real job instead: a succeeded one for an
    output, any for the others; every other ``ids=`` poll asks for real jobs and one
    unknown id."""
    path = case.path_parameters or {}
    if "job_id" in path and _pick(path["job_id"]) % 2 == 0:
        pool = REAL_JOBS["succeeded"] if "/outputs/" in case.path else [i for ids in REAL_JOBS.values() for i in ids]
        job_id = pool[_pick(path["job_id"]) // 2 % len(pool)]
        case.path_parameters = {**path, "job_id": job_id, **_real_output(case.path, job_id)}
    query = case.query if isinstance(case.query, dict) else {}
    if case.path == "/v1/jobs" and case.method.upper() == "GET" and "ids" in query and _pick(query["ids"]) % 2 == 0:
        everything = [i for ids in REAL_JOBS.values() for i in ids]
        case.query = {**query, "ids": ",".join(everything[:1 + _pick(query["ids"]) // 2 % len(everything)]
                                               + ["A" * 22])}
    return case


def _real_output(template: str, job_id: str) -> dict[str, str]:
    """The path parameters that name one of the job's real outputs under ``template``
    (``.../outputs/masks/{mask}`` -> ``{"mask": "face.png"}``), if it has such an output."""
    pieces = re.split(r"\{(\w+)\}", template.split("/outputs/", 1)[-1])  # literal, name, literal, ...
    if len(pieces) == 1:
        return {}
    pattern = "".join(re.escape(piece) if index % 2 == 0 else f"(?P<{piece}>[^/]+)"
                      for index, piece in enumerate(pieces))
    for output in REAL_OUTPUTS.get(job_id, []):
        found = re.fullmatch(pattern, output)
        if found:
            return found.groupdict()
    return {}


def map_case(_context, case):
    return with_real_jobs(with_real_photos(case))


def seed_jobs(stack: Stack, hold: Path) -> dict[str, list[str]]:
    """Jobs in each status a client meets: two succeeded, then (the hold file in place)
    one running, held in its worker's parse, and three queued behind it."""
    def submit(seed: int) -> str:
        answer = stack.submit(photo_jpeg(40, 32, seed=seed))
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    succeeded = [submit(7100 + i) for i in range(2)]
    # and the real photo with every group of outputs, so each output's path has a real file.
    # Her body is sent, hips included: the tiny model's person is the whole photo, in which the
    # pose model finds no hips (below the frame), and without both the pack leaves out its
    # agnostic images (docs/tryon.md), whose paths would then have no file to fetch.
    body = astronaut_body()
    every = requests.post(f"{stack.api_url}/v1/jobs", files={"image": ("astronaut.jpg", ASTRONAUT.read_bytes())},
                          data={"outputs": "keypoints,masks,garments,tryon",
                                "keypoints": json.dumps({"people": [{"pose_keypoints_2d": body}]})}, timeout=30)
    assert every.status_code == 202, every.text
    succeeded.append(every.json()["id"])
    for job_id in succeeded:
        REAL_OUTPUTS[job_id] = list(stack.wait_for(job_id, ["succeeded"])["result"]["outputs"])
    pack = {f"tryon/{size}/{name}" for size in TRYON_SIZES for name in TRYON_FILES}
    assert pack <= set(REAL_OUTPUTS[succeeded[-1]]), "the seeded try-on pack lacks files"
    hold.write_text("hold")
    running = submit(7200)
    stack.wait_for(running, ["running"])
    wait_until(lambda: any(hold.parent.glob("holding-*")), 60, "the worker to hold its job")
    queued = [submit(7300 + i) for i in range(3)]
    assert all(stack.job(job_id)["status"] == "queued" for job_id in queued)
    return {"succeeded": succeeded, "running": [running], "queued": queued}


@pytest.fixture(scope="module")
def live_api(tmp_path_factory, redis_server, tiny_model):
    base = tmp_path_factory.mktemp("contract")
    hold = base / "hold" / "file"
    hold.parent.mkdir()
    # Webhooks accepted, never delivered: no delivery worker runs, so a fuzzed URL reaches nobody.
    # The worker holds its jobs, so a request that waits for one (Prefer: wait, the demo's
    # routes) waits its whole SYNC_WAIT_SECONDS, kept short here.
    env = {"M2FP_MODEL": str(tiny_model), "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1",
           "MAX_UPLOAD_BYTES": str(2 * 1024 * 1024), "WEBHOOK_SIGNING_KEY": "contract-test",
           HOLD_FILE_VARIABLE: str(hold), "SYNC_WAIT_SECONDS": "1"}
    with local_system(base, **env) as stack:
        stack.worker_app = HARNESS_APP
        stack.start_worker("contract")
        REAL_JOBS.update(seed_jobs(stack, hold))
        try:
            yield stack
        finally:
            hold.unlink(missing_ok=True)  # the held job finishes: the worker stops without waiting on it


@pytest.fixture(scope="module")
def api_schema(live_api):
    schemathesis.hook("before_load_schema")(lambda _context, raw_schema: inline_multipart_schemas(raw_schema))
    loaded = schemathesis.openapi.from_url(f"{live_api.api_url}/v1/openapi.json")
    loaded.hook("map_case")(map_case)
    return loaded


# Every operation: schemathesis leaves out the one that served the document itself unless
# a filter names it, and a filter matching every path does (on the fixture's schema: it
# replaces the filters of the schema the fixture returns).
schema = schemathesis.pytest.from_fixture("api_schema").include(path_regex="^/")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_answer_is_documented_and_none_is_a_server_error(case):
    documented = case.method.lower() in case.operation.schema.raw_schema["paths"][case.path]
    operation = f"{case.method} {case.path}" if documented else "undocumented methods"
    STARTED[:] = STARTED or [time.monotonic()]
    if time.monotonic() - STARTED[0] > SECONDS and (operation in SUCCEEDED or not documented):
        UNSENT[operation] += 1
        return
    response = case.call_and_validate(timeout=30, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
        response_schema_conformance])
    RAN[(operation, outcome(response.status_code, response.json if response.status_code >= 400 else None))] += 1
    if documented and 200 <= response.status_code < 300:
        SUCCEEDED.add(operation)
    if documented and case.path == "/v1/jobs/batch" and response.status_code == 200:
        for item in response.json()["items"]:
            ITEMS[outcome(item["status"], lambda item=item: item)] += 1


def test_the_fuzzing_checked_a_success_answer_of_every_operation(api_schema):
    # Runs after the fuzzing (pytest keeps the module's order): a 2xx body never checked
    # against the document is the gap a wrong declaration hides in.
    document = api_schema.raw_schema
    operations = {f"{method.upper()} {path}" for path, methods in document["paths"].items() for method in methods}
    assert RAN, "the fuzzing did not run"
    assert sorted(operations - SUCCEEDED) == [], RAN


def outcome(status: int, body: Optional[Callable[[], Any]]) -> str:
    """``202``, or ``400 bad_request``: a status and, for an error, its code."""
    return f"{status} {body()['error']['code']}" if status >= 400 else str(status)
