"""Property-based fuzzing of every API operation from the app's own OpenAPI document (schemathesis).

The API runs as a real `scheduler api` process on a database of this module's own; schemathesis
generates valid and invalid requests for each operation and checks that none answers 5xx and that
every answer is one the document describes (status, content type, body schema).
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
from scheduler.api.problems import NUL_MESSAGE
from scheduler.api.schemas import JobCreate, JobPatch, PreviewIn
from scheduler.config import load_settings
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


class TestHostileInput:
    """Inputs that once answered 500 (found by fuzzing and by hand) now answer a 4xx problem."""

    async def test_renaming_onto_a_taken_name_is_a_409(self, client):
        job = {"schedule": "@daily", "action": {"type": "log"}}
        first = await client.post("/jobs", json={"name": "a", **job})
        await client.post("/jobs", json={"name": "b", **job})
        response = await client.patch(f"/jobs/{first.json()['id']}", json={"name": "b"})
        assert response.status_code == 409
        assert response.json()["errors"] == [{"field": "name", "message": "already exists"}]

    @pytest.mark.parametrize(
        ("extra", "field"),
        [
            ({"description": "a\u0000b"}, "description"),
            ({"labels": {"team": "\u0000"}}, "labels.team"),
            (
                {"action": {"type": "log", "payload": {"deep": ["ok", {"k": "\u0000"}]}}},
                "action.payload.deep.1.k",
            ),
            ({"action": {"type": "http", "url": "https://a\u0000.example/"}}, "action.url"),
            ({"schedule": "@at 2099-01-01T00:00:00\u0000Z"}, "schedule"),
        ],
    )
    async def test_nul_characters_are_refused_naming_the_field(self, client, extra, field):
        body = {"name": "nul", "schedule": "@daily", "action": {"type": "log"}} | extra
        response = await client.post("/jobs", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == [{"field": field, "message": NUL_MESSAGE}]

    @pytest.mark.parametrize("param", ["name_prefix", "label"])
    async def test_nul_characters_in_list_filters_are_refused(self, client, param):
        response = await client.get("/jobs", params={param: "k:\u0000"})
        assert response.status_code == 400
        assert response.json()["errors"][0]["field"] == param

    @pytest.mark.parametrize(
        ("extra", "field"),
        [
            ({"start_at": "0001-01-01T00:00:00+01:00"}, "start_at"),
            ({"end_at": "9999-12-31T23:59:59Z"}, "end_at"),
            ({"schedule": "@at 9999-12-31T23:59:59-23:59"}, "schedule"),
        ],
    )
    async def test_instants_outside_the_working_years_are_refused(self, client, extra, field):
        body = {"name": "far", "schedule": "@every 1h", "action": {"type": "log"}} | extra
        response = await client.post("/jobs", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field

    async def test_a_preview_running_past_the_calendar_is_refused(self, client):
        late = await client.post(
            "/schedules/preview",
            json={"schedule": "@every 3660d", "after": "8999-12-31T00:00:00Z", "count": 100},
        )
        assert late.status_code == 422
        assert late.json()["errors"][0]["field"] == "count"
        early = await client.post(
            "/schedules/preview", json={"schedule": "@daily", "after": "1900-01-01T00:00:00Z"}
        )
        assert early.status_code == 422
        assert early.json()["errors"][0]["field"] == "after"

    async def test_a_url_with_an_unbalanced_bracket_is_refused(self, client):
        body = {"name": "u", "schedule": "@daily", "action": {"type": "http", "url": "http://[::1/"}}
        response = await client.post("/jobs", json=body)
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "action.url"


# ------------------------------------------------------------------ request decoding, by hand-built JSON

# JSON text that json.dumps never writes but a client (or an attacker) can send.
ODD_NUMBERS = [
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"-0",
    b"-0.0",
    b"0e0",
    b"9" * 5000,
    b"-" + b"9" * 5000,
    b"18446744073709551616",
    b"-9223372036854775809",
    b"9223372036854775807",
    b"NaN",
    b"nan",
    b"Infinity",
    b"-Infinity",
    b"1.",
    b".5",
    b"01",
    b"0x10",
    b"+1",
]
ODD_STRINGS = [
    rb'"\u0000"',
    rb'"a\u0000"',
    rb'"\ud800"',
    rb'"\udc00x"',
    rb'"\ud83d\ude00"',
    rb'"\u2028\u0085"',
    '"\u2028\u0085"'.encode(),
    b'"\xff"',
    b'"\xc3\x28"',
    b'"\xed\xa0\x80"',
    b'"\x00"',
    b'"\x1f"',
    b'"' + b"a" * 10_000 + b'"',
    rb'"\x"',
]
# Field names of the request shapes, so that generated objects reach the typed fields.
FIELD_NAMES = sorted(
    {
        *JobCreate.__struct_fields__,
        *PreviewIn.__struct_fields__,
        *HttpAction.__struct_fields__,
        *RetryPolicy.__struct_fields__,
        *Misfire.__struct_fields__,
        "type",
        "payload",
    }
)


def _json_text(value: Any) -> bytes:
    return msgspec.json.encode(value)


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _object(pairs: dict[str, bytes]) -> bytes:
    return b"{" + b",".join(_json_text(key) + b":" + value for key, value in pairs.items()) + b"}"


_scalars = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.sampled_from(ODD_STRINGS),
    st.sampled_from([b"true", b"false", b"null", b"0", b'""', b"{}", b"[]"]),
    st.integers().map(lambda n: str(n).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.text(max_size=20).map(_json_text),
    st.sampled_from(["@every 1h", "0 9 ? * MON", "UTC", "Europe/Berlin", "2030-01-01T00:00:00Z"]).map(
        _json_text
    ),
)
_deep = st.tuples(st.integers(1, 3000), st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")])).map(
    lambda shape: shape[1][0] * shape[0] + (b"1" if shape[1][0] != b"[" else b"") + shape[1][1] * shape[0]
)
_wide = st.integers(0, 50_000).map(lambda n: _array([b"0"] * n))
JSON_TREES = st.recursive(
    st.one_of(_scalars, _deep, _wide),
    lambda children: st.one_of(
        st.lists(children, max_size=5).map(_array),
        st.dictionaries(
            st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), children, max_size=5
        ).map(_object),
    ),
    max_leaves=25,
)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    """A whole body: a tree, or a valid-looking job with a tree put where a typed or free field goes."""
    tree = draw(JSON_TREES)
    where = draw(st.sampled_from(["whole", "payload", "field", "header", "body", "mutated"]))
    name = _json_text(f"fuzz-{uuid.uuid4().hex[:12]}")
    if where == "whole":
        return tree
    if where == "payload":
        return (
            b'{"name":'
            + name
            + b',"schedule":"@every 1h","action":{"type":"log","payload":{"k":'
            + tree
            + b"}}}"
        )
    if where == "header":
        return (
            b'{"name":' + name + b',"schedule":"@every 1h","action":{"type":"http",'
            b'"url":"https://receiver.example/hook","headers":{"X-A":' + tree + b"}}}"
        )
    if where == "body":
        return (
            b'{"name":' + name + b',"schedule":"@every 1h","action":{"type":"http",'
            b'"url":"https://receiver.example/hook","body":' + tree + b"}}"
        )
    valid = b'{"name":' + name + b',"schedule":"@every 1h","timezone":"UTC","action":{"type":"log"}}'
    if where == "field":
        field = draw(st.sampled_from(FIELD_NAMES))
        return valid[:-1] + b"," + _json_text(field) + b":" + tree + b"}"
    at = draw(st.integers(0, len(valid)))
    return valid[:at] + draw(st.binary(max_size=4)) + valid[at + draw(st.integers(0, 4)) :]


ROUTES_WITH_BODIES = [("POST", "/jobs"), ("PATCH", "/jobs/{job_id}"), ("POST", "/schedules/preview")]


@pytest.fixture
async def patch_target(client: Any) -> str:
    """The path of a job that the PATCH cases update (made once per test, not per example)."""
    created = await client.post(
        "/jobs", json={"name": "fuzz-target", "schedule": "@every 1h", "action": {"type": "log"}}
    )
    assert created.status_code == 201, created.text
    return f"/jobs/{created.json()['id']}"


def _assert_answered_as_a_problem_or_success(response: Any, body: bytes) -> None:
    assert response.status_code < 500, (response.status_code, response.text, body[:300])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
        problem = response.json()
        assert problem["status"] == response.status_code
        assert problem["errors"], problem  # every 4xx says what is wrong and where
        assert all(error["field"] and error["message"] for error in problem["errors"]), problem


class TestRequestDecodingFuzz:
    """No body, however malformed, deep, wide or oddly numbered, makes a route with a body answer 5xx.

    In-process, against a real database: raw bytes, and JSON text built by hand (so that it holds
    what encoders never write: 1e400, -0, 5,000-digit integers, NaN spellings, lone surrogate
    escapes, invalid UTF-8, NUL, U+2028), alone or placed inside otherwise valid jobs.
    """

    async def _send_everywhere(self, client: Any, job_path: str, body: bytes) -> None:
        for method, path in ROUTES_WITH_BODIES:
            response = await client.request(
                method,
                path.replace("/jobs/{job_id}", job_path),
                content=body,
                headers={"content-type": "application/json"},
            )
            _assert_answered_as_a_problem_or_success(response, body)

    @given(body=st.binary(max_size=512))
    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    async def test_raw_bytes_never_answer_5xx(self, client, patch_target, body):
        await self._send_everywhere(client, patch_target, body)

    @given(body=_bodies())
    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
        database=None,
    )
    async def test_hand_built_json_never_answers_5xx(self, client, patch_target, body):
        await self._send_everywhere(client, patch_target, body)
