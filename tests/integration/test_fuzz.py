"""Hostile and fuzzed request bodies at the in-process API: each answers a 4xx problem or success, never 5xx.

The inputs that once answered 500 are kept here as cases, beside hypothesis-built bodies: raw bytes
and hand-built JSON with odd numbers, odd strings and deep trees. Fuzzing every operation of a real
`scheduler api` process from its own OpenAPI document: tests/acceptance/test_fuzz.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.api.problems import NUL_MESSAGE
from scheduler.api.schemas import JobCreate, PreviewIn
from scheduler.domain.models import HttpAction, Misfire, RetryPolicy


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
