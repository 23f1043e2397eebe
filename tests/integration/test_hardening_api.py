"""Hostile input at the API (issue 10): every answer is a 4xx problem naming what is wrong, never 500.

In-process against a real PostgreSQL. Lost connections at a real `scheduler api` process:
tests/acceptance/test_hardening_api.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.config import ConfigError, load_settings
from scheduler.domain.validation import HEADER_VALUE_MESSAGE
from tests.conftest import create_api_key, settings_for

JOB = {"name": "hardened", "schedule": "@every 1h", "action": {"type": "log"}}
JSON = {"content-type": "application/json"}


@asynccontextmanager
async def api(db_url: str, **overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings_for(db_url, **overrides))) as client:
        yield client


async def make_job(client: AsyncTestClient[Any] | httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    response = await client.post("/jobs", json=JOB | extra)
    assert response.status_code == 201, response.text
    return dict(response.json())


def assert_problem(response: Any, status: int, field: str) -> dict[str, Any]:
    """The answer is an RFC 9457 problem of ``status`` whose errors name ``field``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert field in [error["field"] for error in problem["errors"]], problem
    assert all(error["message"] for error in problem["errors"])
    return problem


def json_nested(depth: int) -> list[Any]:
    """``depth`` arrays, each inside the one before."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# (name, raw body, status, field) — each once answered 500 or a 4xx that named nothing.
MALFORMED = [
    ("invalid-utf8-in-a-string", b'{"action": {"type": "log", "payload": {"a": "\xff"}}}', 400, "body"),
    ("invalid-utf8-in-a-name", b'{"name": "x\xc3\x28"}', 400, "body"),
    (
        "deep-arrays-in-a-payload",
        b'{"action": {"type": "log", "payload": {"a": ' + nested(1000) + b"}}}",
        400,
        "body",
    ),
    (
        "deep-objects-in-a-payload",
        b'{"action": {"type": "log", "payload": ' + b'{"a":' * 1000 + b"1" + b"}" * 1002,
        400,
        "body",
    ),
    ("truncated", b'{"name":', 400, "body"),
    ("number-beyond-float", b'{"timeout_s": 1e400}', 400, "timeout_s"),
    ("5000-digit-integer", b'{"timeout_s": ' + b"9" * 5000 + b"}", 400, "timeout_s"),
]
# Deep nesting under a key the API does not know is refused by that key's name before its value is
# read: a 422 naming the field, which is as good as the 400 of the other cases.
DEEP_UNKNOWN = b'{"bogus": ' + nested(1000) + b"}"


class TestMalformedBodies:
    """Items 4 and 9: malformed bodies answer a 400 problem naming the field (or `body`); nothing is saved."""

    @pytest.mark.parametrize(
        ("body", "status", "field"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
    )
    async def test_a_malformed_create_is_a_400_naming_where(self, client, sql, body, status, field):
        response = await client.post("/jobs", content=body, headers=JSON)
        assert_problem(response, status, field)
        assert sql("SELECT count(*) FROM jobs") == [(0,)]

    @pytest.mark.parametrize(
        ("body", "status", "field"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
    )
    async def test_a_malformed_update_is_a_400_and_leaves_the_job_alone(
        self, client, sql, body, status, field
    ):
        job = await make_job(client)
        response = await client.patch(f"/jobs/{job['id']}", content=body, headers=JSON)
        assert_problem(response, status, field)
        assert sql("SELECT version, timeout_s FROM jobs") == [(1, 30)]

    # docs/api.md, Errors: a body that is not JSON (as for a create, a number with no 64-bit form
    # counts) is a 400; a deep array where a time belongs is JSON with a wrong value, a 422.
    @pytest.mark.parametrize(
        ("body", "status", "field"),
        [
            (b'{"schedule": "@daily", "timezone": "\xff"}', 400, "body"),
            (b'{"schedule": "@daily", "after": ' + nested(1000) + b"}", 422, "after"),
            (b'{"schedule": "@daily", "count": 1e400}', 400, "count"),
            (b'{"schedule": "@daily", "count": ' + b"1" * 5000 + b"}", 400, "count"),
            (b'{"schedule": "@da', 400, "body"),
        ],
        ids=["invalid-utf8", "deep", "1e400", "huge-integer", "truncated"],
    )
    async def test_a_malformed_preview_is_a_4xx_naming_where(self, client, body, status, field):
        response = await client.post("/schedules/preview", content=body, headers=JSON)
        assert_problem(response, status, field)

    async def test_deep_nesting_under_an_unknown_field_is_refused_by_its_name(self, client, sql):
        job = await make_job(client)
        for method, path in (
            ("POST", "/jobs"),
            ("PATCH", f"/jobs/{job['id']}"),
            ("POST", "/schedules/preview"),
        ):
            response = await client.request(method, path, content=DEEP_UNKNOWN, headers=JSON)
            assert_problem(response, 422, "bogus")
        assert sql("SELECT count(*), max(version) FROM jobs") == [(1, 1)]

    async def test_an_empty_body_is_a_400_saying_one_is_required(self, client, sql):
        for headers in (JSON, {}):
            response = await client.post("/jobs", content=b"", headers=headers)
            problem = assert_problem(response, 400, "body")
            assert problem["errors"] == [{"field": "body", "message": "is required: send a JSON object"}]
        assert sql("SELECT count(*) FROM jobs") == [(0,)]

    @pytest.mark.parametrize(
        ("action", "field"),
        [
            ({"type": "log", "payload": {"a": json_nested(64)}}, "action.payload"),
            (
                {"type": "http", "url": "https://receiver.example/hook", "body": json_nested(65)},
                "action.body",
            ),
        ],
        ids=["payload", "http-body"],
    )
    async def test_a_payload_or_body_nesting_past_64_levels_is_refused(self, client, sql, action, field):
        # Runners decode and log these at a deeper stack than the API: what the API could just decode
        # must not reach them.
        response = await client.post("/jobs", json=JOB | {"action": action})
        problem = assert_problem(response, 422, field)
        assert problem["errors"] == [{"field": field, "message": "nests deeper than 64 levels"}]
        assert sql("SELECT count(*) FROM jobs") == [(0,)]

    async def test_nesting_of_64_levels_is_accepted(self, client):
        action = {"type": "log", "payload": {"a": json_nested(63)}}
        response = await client.post("/jobs", json=JOB | {"action": action})
        assert response.status_code == 201, response.text
        assert response.json()["action"] == action

    async def test_the_service_answers_normally_after_hostile_bodies(self, client):
        for _, body, _, _ in MALFORMED:
            await client.post("/jobs", content=body, headers=JSON)
        assert (await client.post("/jobs", json=JOB)).status_code == 201


class TestContentType:
    """Item 10: a body must be declared application/json or */*+json; anything else is a 415 problem."""

    BODY = b'{"name": "typed", "schedule": "@every 1h", "action": {"type": "log"}}'

    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/xml",
            "application/jsonx",
            "json",
            "application/json; charset=latin-1",
            None,
        ],
    )
    async def test_a_body_not_declared_as_json_is_415_and_nothing_is_written(self, client, sql, content_type):
        headers = {} if content_type is None else {"content-type": content_type}
        response = await client.post("/jobs", content=self.BODY, headers=headers)
        problem = assert_problem(response, 415, "Content-Type")
        assert (content_type or "no Content-Type") in problem["detail"]
        assert sql("SELECT count(*) FROM jobs") == [(0,)]

    async def test_updates_and_previews_check_the_type_too(self, client, sql):
        job = await make_job(client)
        patch = await client.patch(
            f"/jobs/{job['id']}", content=b'{"description": "x"}', headers={"content-type": "text/plain"}
        )
        assert_problem(patch, 415, "Content-Type")
        preview = await client.post(
            "/schedules/preview",
            content=b'{"schedule": "@daily"}',
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert_problem(preview, 415, "Content-Type")
        assert sql("SELECT description, version FROM jobs") == [("", 1)]

    @pytest.mark.parametrize(
        "content_type",
        [
            "application/json",
            "application/json; charset=utf-8",
            'Application/JSON;charset="UTF-8"',
            "application/vnd.x+json",
        ],
    )
    async def test_json_and_plus_json_types_are_accepted(self, client, content_type):
        response = await client.post("/jobs", content=self.BODY, headers={"content-type": content_type})
        assert response.status_code == 201, response.text
        patched = await client.patch(
            f"/jobs/{response.json()['id']}",
            content=b'{"description": "merged"}',
            headers={"content-type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text


class TestHeaderValues:
    """Item 7: header values the runner could never send are refused at write time, naming the header."""

    @pytest.mark.parametrize(
        "value",
        [
            "café",
            "\U0001f600",
            "a\u2028b",
            "a\u0085b",
            " a",
            "a ",
            "\ta",
            "a\x0bb",
            "\x01",
            "a\x7f",
            "\x1b[31m",
            "a\nb",
            "a\r\n",
        ],
        ids=[
            "latin",
            "emoji",
            "u2028",
            "u0085",
            "leading-space",
            "trailing-space",
            "leading-tab",
            "vt",
            "soh",
            "del",
            "esc",
            "lf",
            "crlf",
        ],
    )
    async def test_a_value_outside_visible_ascii_is_422_naming_the_header(self, client, sql, value):
        action = {"type": "http", "url": "https://receiver.example/hook", "headers": {"X-A": value}}
        response = await client.post("/jobs", json=JOB | {"action": action})
        problem = assert_problem(response, 422, "action.headers.X-A")
        assert {"field": "action.headers.X-A", "message": HEADER_VALUE_MESSAGE} in problem["errors"]
        assert sql("SELECT count(*) FROM jobs") == [(0,)]

    async def test_an_update_with_such_a_value_is_refused_too(self, client, sql):
        job = await make_job(client)
        action = {"type": "http", "url": "https://receiver.example/hook", "headers": {"X-B": "naïve"}}
        response = await client.patch(f"/jobs/{job['id']}", json={"action": action})
        assert_problem(response, 422, "action.headers.X-B")
        assert sql("SELECT version FROM jobs") == [(1,)]

    async def test_visible_ascii_with_inner_spaces_and_tabs_is_accepted(self, client):
        headers = {
            "Authorization": "Bearer a b\tc",
            "X-Empty": "",
            "X-Symbols": "!#$%&'*+-.^_`|~()<>@,;:\\\"/[]?={}",
        }
        action = {"type": "http", "url": "https://receiver.example/hook", "headers": headers}
        response = await client.post("/jobs", json=JOB | {"action": action})
        assert response.status_code == 201, response.text
        assert response.json()["action"]["headers"] == headers

    @pytest.mark.parametrize("name", ["Webhook-Custom", "webhook-id", "Host", "X-A\n", "X A", "Ünicode"])
    async def test_names_that_are_not_tokens_or_that_the_runner_sets_are_refused(self, client, name):
        action = {"type": "http", "url": "https://receiver.example/hook", "headers": {name: "v"}}
        response = await client.post("/jobs", json=JOB | {"action": action})
        assert_problem(response, 422, f"action.headers.{name}")


class TestTrailingNewlines:
    """A pattern's `$` matches before a final newline: names and label keys ending in one are refused."""

    async def test_a_name_ending_in_a_newline_is_refused(self, client, sql):
        response = await client.post("/jobs", json=JOB | {"name": "nightly\n"})
        assert_problem(response, 422, "name")
        job = await make_job(client)
        renamed = await client.patch(f"/jobs/{job['id']}", json={"name": "nightly\n"})
        assert_problem(renamed, 422, "name")
        assert sql("SELECT name FROM jobs") == [("hardened",)]

    async def test_a_label_key_ending_in_a_newline_is_refused(self, client):
        response = await client.post("/jobs", json=JOB | {"labels": {"team\n": "x"}})
        assert_problem(response, 422, "labels.team\n")


class TestIdsPastTheLastRepresentableTime:
    """A UUIDv7 carries 48 bits of milliseconds, which reach past the year 9999: such a run is not found."""

    @pytest.mark.parametrize(
        "run_id", ["ffffffff-ffff-7fff-bfff-ffffffffffff", "e6666666-6666-7666-8666-666666666666"]
    )
    async def test_a_run_id_past_9999_is_404(self, client, run_id):
        for path in (f"/runs/{run_id}", f"/runs/{run_id}/cancel", f"/runs/{run_id}/retry"):
            response = await (client.get(path) if path.endswith(run_id) else client.post(path))
            assert response.status_code == 404, (path, response.text)


class TestConditionalUpdates:
    """Item 13: an update that changes nothing keeps the version; If-Match compares strongly."""

    async def test_an_empty_patch_changes_neither_version_nor_etag(self, client, sql):
        job = await make_job(client)
        for body in ({}, {"description": ""}, {"schedule": "@every 1h", "paused": False}):
            response = await client.patch(f"/jobs/{job['id']}", json=body)
            assert response.status_code == 200, response.text
            assert response.headers["etag"] == '"1"'
            assert response.json() == job
        assert sql("SELECT version FROM jobs") == [(1,)]
        changed = await client.patch(f"/jobs/{job['id']}", json={"description": "now"})
        assert changed.headers["etag"] == '"2"'

    async def test_an_empty_patch_still_honours_if_match(self, client):
        job = await make_job(client)
        stale = await client.patch(f"/jobs/{job['id']}", json={}, headers={"if-match": '"7"'})
        assert stale.status_code == 412

    async def test_a_weak_etag_never_matches(self, client, sql):
        job = await make_job(client)
        weak = await client.patch(
            f"/jobs/{job['id']}", json={"description": "x"}, headers={"if-match": 'W/"1"'}
        )
        assert weak.status_code == 412
        assert sql("SELECT description, version FROM jobs") == [("", 1)]

    async def test_a_list_of_tags_matches_when_one_is_current(self, client):
        job = await make_job(client)
        response = await client.patch(
            f"/jobs/{job['id']}", json={"description": "x"}, headers={"if-match": 'W/"1", "9", "1"'}
        )
        assert response.status_code == 200
        assert response.headers["etag"] == '"2"'


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class TestFailedAuthentications:
    """Item 13: unknown keys are limited per client address and repeated ones cost no database query."""

    async def test_an_address_guessing_keys_gets_429_without_reaching_the_database(self, db_url):
        good = await create_api_key(db_url, "alpha")
        async with api(db_url, auth="required", auth_failure_burst=5, auth_failure_rate_per_s=1) as client:
            assert (await client.get("/jobs", headers=bearer(good))).status_code == 200
            stats = client.app.state.pool.get_stats
            borrowed = stats().get("requests_num", 0)
            statuses = [
                (await client.get("/jobs", headers=bearer(f"sk_guess{i:04d}"))).status_code
                for i in range(300)
            ]
            assert statuses[:5] == [401] * 5
            assert set(statuses[5:]) <= {401, 429}
            assert statuses.count(429) > 250
            # Five lookups for the burst, plus one for each token refilled while the loop ran.
            assert stats().get("requests_num", 0) - borrowed < 5 + 30
            refused = await client.get("/jobs", headers=bearer("sk_guess-more"))
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"  # a token a second, in whole seconds
            assert refused.json()["type"] == "https://scheduler.dev/problems/rate-limited"
            # A key this API process knows keeps working; the limit is on failures, not on the address.
            assert (await client.get("/jobs", headers=bearer(good))).status_code == 200

    async def test_a_repeated_unknown_key_is_looked_up_once(self, db_url):
        async with api(db_url, auth="required", auth_failure_burst=1000) as client:
            stats = client.app.state.pool.get_stats
            borrowed = stats().get("requests_num", 0)
            for _ in range(50):
                assert (await client.get("/jobs", headers=bearer("sk_never-made"))).status_code == 401
            assert stats().get("requests_num", 0) - borrowed == 1

    async def test_an_address_is_served_again_once_its_tokens_refill(self, db_url):
        good = await create_api_key(db_url, "alpha")
        async with api(db_url, auth="required", auth_failure_burst=2, auth_failure_rate_per_s=5) as client:
            for i in range(3):
                await client.get("/jobs", headers=bearer(f"sk_wrong{i}"))
            assert (await client.get("/jobs", headers=bearer(good))).status_code == 429
            deadline = time.monotonic() + 10
            while (await client.get("/jobs", headers=bearer(good))).status_code == 429:
                assert time.monotonic() < deadline, "the address was never served again"
                await asyncio.sleep(0.05)

    def test_the_failure_limit_is_two_settings_with_ranges(self):
        settings = load_settings({})
        assert (settings.auth_failure_rate_per_s, settings.auth_failure_burst) == (1, 20)
        tuned = load_settings({"SCHEDULER_AUTH_FAILURE_RATE_PER_S": "3", "SCHEDULER_AUTH_FAILURE_BURST": "7"})
        assert (tuned.auth_failure_rate_per_s, tuned.auth_failure_burst) == (3, 7)
        for name in ("SCHEDULER_AUTH_FAILURE_RATE_PER_S", "SCHEDULER_AUTH_FAILURE_BURST"):
            with pytest.raises(ConfigError, match=name):
                load_settings({name: "0"})

    async def test_requests_without_a_key_are_401_and_not_counted(self, db_url):
        async with api(db_url, auth="required", auth_failure_burst=1) as client:
            statuses = {(await client.get("/jobs")).status_code for _ in range(10)}
            assert statuses == {401}
