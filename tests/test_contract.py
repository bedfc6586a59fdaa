"""Contract tests: schemathesis fuzzes the running API (gunicorn, real Redis, a real
worker) from the API's own OpenAPI document. Every answer must be documented (status,
content type, body schema) and none may be a 5xx.

Bounded for the suite's time budget: ``CONTRACT_EXAMPLES`` generated cases per
operation and phase (default 25). What ran (requests per operation and status) is
printed in the session's summary.
"""
from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from scripts.stack import local_system

EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "25"))
RAN: Counter = Counter()  # (operation, status and error code) -> requests


def report(write_line) -> None:
    """What the fuzzing ran, for the end of the session (tests/conftest.py calls it)."""
    if not RAN:
        return
    write_line(f"contract fuzzing: {sum(RAN.values())} requests, at most {EXAMPLES} cases per operation and phase")
    for operation in sorted({operation for operation, _ in RAN}):
        answers = sorted((answer, count) for (op, answer), count in RAN.items() if op == operation)
        write_line(f"  {operation}: " + ", ".join(f"{answer} x{count}" for answer, count in answers))


@pytest.fixture(scope="module")
def live_api(tmp_path_factory, redis_server, tiny_model):
    base = tmp_path_factory.mktemp("contract")
    # Webhooks accepted, never delivered: no delivery worker runs, so a fuzzed URL reaches nobody.
    env = {"M2FP_MODEL": str(tiny_model), "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1",
           "MAX_UPLOAD_BYTES": str(2 * 1024 * 1024), "WEBHOOK_SIGNING_KEY": "contract-test"}
    with local_system(base, **env) as stack:
        stack.start_worker("contract")
        yield stack


@pytest.fixture(scope="module")
def api_schema(live_api):
    return schemathesis.openapi.from_url(f"{live_api.api_url}/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_answer_is_documented_and_none_is_a_server_error(case):
    response = case.call_and_validate(timeout=30, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance])
    documented = case.method.lower() in case.operation.schema.raw_schema["paths"][case.path]
    operation = f"{case.method} {case.path}" if documented else "undocumented methods"
    code = response.json()["error"]["code"] if response.status_code >= 400 else ""
    RAN[(operation, f"{response.status_code} {code}".strip())] += 1
