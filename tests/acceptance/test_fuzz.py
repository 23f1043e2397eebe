"""Property-based fuzzing of every API operation from the app's own OpenAPI document (schemathesis).

The API runs as a real `scheduler api` process on a database of this module's own; schemathesis
generates valid and invalid requests for each operation and checks that none answers 5xx and that
every answer is one the document describes (status, content type, body schema). Hostile and
hypothesis-built bodies at the in-process API: tests/integration/test_fuzz.py.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from scheduler.api.app import create_app
from scheduler.api.schemas import JobCreate, PreviewIn
from scheduler.config import load_settings
from scheduler.domain.fields import JobPatch
from scheduler.domain.models import HttpAction, LogAction, Misfire, RetryPolicy
from tests.conftest import Proc, Procs, _admin, url_for, wait_for

# Cases per operation: with 16 operations this makes a few hundred requests in all.
EXAMPLES_PER_OPERATION = 30
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class FuzzedApi:
    """The API process under fuzzing and where it listens."""

    url: str
    proc: Proc


@pytest.fixture(scope="module")
def fuzzed_api(
    server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzedApi]:
    """A `scheduler api` process (auth off) on a database shared by this module's fuzzing."""
    name = f"sched_fuzz_{os.getpid()}"
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    group = Procs(url_for(server_url, name), Path(tmp_path_factory.mktemp("fuzz")))
    port = _free_port()
    api = group.start(["-m", "scheduler", "api", "--port", str(port)])
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            assert api.popen.poll() is None, api.output()
            return False

    try:
        wait_for(ready, timeout=30, what="the API process")
        yield FuzzedApi(base, api)
    finally:
        group.stop_all()
        with _admin(server_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _offline_document() -> dict[str, Any]:
    """The app's OpenAPI document, built without a database, to name the operations at collection."""
    app = create_app(load_settings({"SCHEDULER_DATABASE_URL": "postgresql://unused/unused"}))
    return app.openapi_schema.to_schema()


OPERATIONS = [
    (method.upper(), path)
    for path, item in _offline_document()["paths"].items()
    for method in item
    if method in ("get", "put", "post", "patch", "delete")
]


@pytest.fixture(scope="module")
def api_schema(fuzzed_api: FuzzedApi) -> schemathesis.BaseSchema:
    """The document the running API serves, which is what gets fuzzed."""
    return schemathesis.openapi.from_url(f"{fuzzed_api.url}/schema/openapi.json")


@pytest.fixture
def known_ids(fuzzed_api: FuzzedApi) -> dict[str, str]:
    """A job and a run that exist, so that cases reach past the 404 of made-up ids into the handlers."""
    job = httpx.post(
        f"{fuzzed_api.url}/jobs",
        json={"name": f"fuzz-{uuid.uuid4().hex}", "schedule": "@every 1h", "action": {"type": "log"}},
    )
    assert job.status_code == 201, job.text
    run = httpx.post(f"{fuzzed_api.url}/jobs/{job.json()['id']}/trigger")
    assert run.status_code == 202, run.text
    return {"job_id": job.json()["id"], "run_id": run.json()["id"]}


# Random text is almost never a schedule, a time zone or a URL, and the document does not say that
# unknown fields are refused; cleaning some bodies into plausible ones lets cases get past validation
# into the code that stores, updates and fires jobs.
SCHEDULES = ["@every 1h", "0 9 * * MON", "*/10 * * * * *", "@daily", "@at 2099-01-01T00:00:00Z"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York"]
BODY_SHAPES: dict[str, type[msgspec.Struct]] = {
    "POST /jobs": JobCreate,
    "PATCH /jobs/{job_id}": JobPatch,
    "POST /schedules/preview": PreviewIn,
}
NESTED_SHAPES: dict[str, type[msgspec.Struct]] = {"retry": RetryPolicy, "misfire": Misfire}


def _only_fields(value: dict[str, Any], shape: type[msgspec.Struct]) -> dict[str, Any]:
    # JSON Schema counts 5.0 as an integer and the generator likes such floats; the API does not.
    return {
        key: int(item) if isinstance(item, float) and item.is_integer() else item
        for key, item in value.items()
        if key in shape.__struct_fields__
    }


def _plausible(body: dict[str, Any], shape: type[msgspec.Struct], draw: st.DrawFn) -> dict[str, Any]:
    cleaned = _only_fields(body, shape)
    if "schedule" in cleaned:
        cleaned["schedule"] = draw(st.sampled_from(SCHEDULES))
    if "timezone" in cleaned:
        cleaned["timezone"] = draw(st.sampled_from(ZONES))
    for key, nested in NESTED_SHAPES.items():
        if isinstance(cleaned.get(key), dict):
            cleaned[key] = _only_fields(cleaned[key], nested)
    action = cleaned.get("action")
    if isinstance(action, dict):
        if action.get("type") == "http":
            cleaned["action"] = _only_fields(action, HttpAction) | {
                "type": "http",
                "url": "https://receiver.example/hook",
            }
        else:
            cleaned["action"] = _only_fields(action, LogAction) | {"type": "log"}
    return cleaned


@st.composite
def _cases(draw: st.DrawFn, operation: Any, known: dict[str, str]) -> Any:
    ids = {name: value for name, value in known.items() if "{" + name + "}" in operation.path}
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    options = [operation.as_strategy(mode) for mode in modes]
    if ids:
        options += [operation.as_strategy(mode, path_parameters=ids) for mode in modes]
    case = draw(st.one_of(options))
    shape = BODY_SHAPES.get(operation.label)
    if shape is not None and isinstance(case.body, dict) and draw(st.booleans()):
        case.body = _plausible(case.body, shape, draw)
    return case


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_operation_answers_5xx_or_outside_its_documented_responses(
    method, path, api_schema, known_ids, fuzzed_api
):
    operation = api_schema[path][method]

    @given(case=_cases(operation, known_ids))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        case.call_and_validate(base_url=fuzzed_api.url, checks=CHECKS)

    try:
        check()
    except Exception:
        print(fuzzed_api.proc.output()[-20_000:])  # the server's side of a failure, with its trace
        raise


def test_every_operation_is_fuzzed(api_schema):
    served = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert served == set(OPERATIONS)
