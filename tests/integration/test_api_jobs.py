"""The /jobs API against a real PostgreSQL: success paths, every kind of bad input, pagination."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

LOG_ACTION = {"type": "log", "payload": {"hello": "world"}}


def job_body(name: str = "report", **extra: Any) -> dict[str, Any]:
    return {"name": name, "schedule": "0 9 * * 1", "timezone": "Europe/Berlin", "action": LOG_ACTION} | extra


async def create(client, **extra: Any) -> dict[str, Any]:
    response = await client.post("/jobs", json=job_body(**extra))
    assert response.status_code == 201, response.text
    return response.json()


async def job_count(client) -> int:
    return len((await client.get("/jobs", params={"limit": 500})).json()["items"])


class TestCreate:
    """POST /jobs stores the job with its first fire time and answers 201 with Location and ETag."""

    async def test_created_job_has_next_run_at_location_and_etag(self, client):
        response = await client.post("/jobs", json=job_body(description="weekly", labels={"team": "billing"}))
        assert response.status_code == 201
        job = response.json()
        assert response.headers["location"] == f"/jobs/{job['id']}"
        assert response.headers["etag"] == '"1"'
        assert job["namespace"] == "default"
        assert job["labels"] == {"team": "billing"}
        assert job["version"] == 1
        assert job["last_run"] is None
        next_run = datetime.fromisoformat(job["next_run_at"])
        berlin = next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
        assert (berlin.weekday(), berlin.hour, berlin.minute) == (0, 9, 0)
        assert next_run > datetime.now(UTC)

    async def test_defaults_follow_the_spec(self, client):
        job = await create(client, timezone="UTC")
        assert job["timeout_s"] == 30
        assert job["retry"] == {"max_attempts": 3, "min_backoff_s": 1.0, "max_backoff_s": 300.0}
        assert job["misfire"] == {"policy": "once", "grace_s": 5, "window_s": 3600}
        assert job["overlap"] == "skip"
        assert job["paused"] is False

    async def test_paused_job_has_no_next_run(self, client):
        job = await create(client, paused=True)
        assert job["next_run_at"] is None

    async def test_http_action_round_trips(self, client):
        action = {
            "type": "http",
            "method": "PUT",
            "url": "https://billing.internal/hooks/report",
            "headers": {"X-Team": "billing"},
            "body": {"kind": "weekly"},
        }
        job = await create(client, action=action)
        assert job["action"] == action | {"success_codes": "2xx", "follow_redirects": False}

    async def test_duplicate_name_is_a_409_naming_the_field(self, client):
        await create(client)
        response = await client.post("/jobs", json=job_body())
        assert response.status_code == 409
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["errors"] == [{"field": "name", "message": "already exists"}]
        assert await job_count(client) == 1

    async def test_one_time_job_fires_at_its_instant(self, client):
        at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        job = await create(client, schedule=f"@at {at.isoformat()}")
        assert datetime.fromisoformat(job["next_run_at"]) == at

    async def test_start_at_bounds_the_first_fire(self, client):
        start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
        job = await create(client, schedule="@every 1h", start_at=start.isoformat())
        assert datetime.fromisoformat(job["next_run_at"]) == start


BAD_BODIES = [
    pytest.param(b"{not json", 400, "body", id="malformed-json"),
    pytest.param(b"[]", 422, "body", id="not-an-object"),
    pytest.param(job_body(extra=1), 422, "extra", id="unknown-field"),
    pytest.param(job_body(action=LOG_ACTION | {"bogus": 1}), 422, "action.bogus", id="unknown-nested-field"),
    pytest.param(job_body(timeout_s="30"), 422, "timeout_s", id="string-for-int"),
    pytest.param(job_body(timeout_s=0), 422, "timeout_s", id="timeout-too-small"),
    pytest.param(job_body(timeout_s=3601), 422, "timeout_s", id="timeout-too-large"),
    pytest.param(job_body(retry={"max_attempts": 21}), 422, "retry.max_attempts", id="too-many-attempts"),
    pytest.param(
        job_body(retry={"min_backoff_s": 10, "max_backoff_s": 1}),
        422,
        "retry.min_backoff_s",
        id="backoff-order",
    ),
    pytest.param(job_body(schedule="61 * * * *"), 422, "schedule", id="bad-cron"),
    pytest.param(job_body(schedule="* * *"), 422, "schedule", id="too-few-fields"),
    pytest.param(job_body(schedule="0 0 30 2 *"), 422, "schedule", id="never-fires"),
    pytest.param(job_body(schedule="@every 0s"), 422, "schedule", id="interval-zero"),
    pytest.param(job_body(schedule="@every 500ms"), 422, "schedule", id="interval-under-1s"),
    pytest.param(job_body(schedule="@at 2001-01-01T00:00:00Z"), 422, "schedule", id="at-in-the-past"),
    pytest.param(job_body(schedule="@at tomorrow"), 422, "schedule", id="at-not-a-time"),
    pytest.param(job_body(schedule="@fortnightly"), 422, "schedule", id="unknown-macro"),
    pytest.param(job_body(timezone="Mars/Olympus_Mons"), 422, "timezone", id="unknown-zone"),
    pytest.param(job_body(timezone="../../etc/passwd"), 422, "timezone", id="zone-path"),
    pytest.param(job_body(name="has space"), 422, "name", id="bad-name"),
    pytest.param(job_body(name="x" * 129), 422, "name", id="long-name"),
    pytest.param(job_body(action={"type": "smtp"}), 422, "action.type", id="unknown-action"),
    pytest.param(job_body(action={"type": "http", "url": "ftp://x/y"}), 422, "action.url", id="url-scheme"),
    pytest.param(job_body(action={"type": "http", "url": "http://"}), 422, "action.url", id="url-no-host"),
    pytest.param(job_body(action={"type": "http", "url": "not a url"}), 422, "action.url", id="url-garbage"),
    pytest.param(
        job_body(action={"type": "http", "url": "https://a.example", "method": "BREW"}),
        422,
        "action.method",
        id="bad-method",
    ),
    pytest.param(
        job_body(action={"type": "http", "url": "https://a.example", "headers": {"Host": "evil"}}),
        422,
        "action.headers.Host",
        id="reserved-header",
    ),
    pytest.param(
        job_body(action={"type": "http", "url": "https://a.example", "success_codes": "ok"}),
        422,
        "action.success_codes",
        id="bad-success-codes",
    ),
    pytest.param(
        job_body(action={"type": "http", "url": "https://a.example", "body": "x" * (256 * 1024 + 1)}),
        422,
        "action.body",
        id="action-body-over-256KiB",
    ),
    pytest.param(
        job_body(start_at="2030-01-02T00:00:00Z", end_at="2030-01-01T00:00:00Z"),
        422,
        "end_at",
        id="end-before-start",
    ),
    pytest.param(job_body(start_at="2030-01-01T00:00:00"), 422, "start_at", id="naive-time"),
    pytest.param(job_body(misfire={"policy": "sometimes"}), 422, "misfire.policy", id="bad-misfire"),
    pytest.param(job_body(overlap="merge"), 422, "overlap", id="bad-overlap"),
    pytest.param(job_body(labels={"team": 5}), 422, "labels", id="label-not-string"),
]


class TestBadInput:
    """Every kind of bad input gets a 4xx problem naming the field, and nothing is written."""

    @pytest.mark.parametrize(("body", "status", "field"), BAD_BODIES)
    async def test_bad_create_is_rejected_naming_the_field(self, client, body, status, field):
        if isinstance(body, bytes):
            response = await client.post("/jobs", content=body, headers={"content-type": "application/json"})
        else:
            response = await client.post("/jobs", json=body)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["status"] == status
        assert {"type", "title", "status", "detail"} <= problem.keys()
        fields = [error["field"] for error in problem["errors"]]
        assert field in fields, problem
        assert await job_count(client) == 0

    async def test_oversized_body_is_413(self, client):
        response = await client.post(
            "/jobs",
            content=b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["errors"][0]["field"] == "body"
        assert await job_count(client) == 0

    async def test_unknown_job_is_a_404_problem(self, client):
        response = await client.get("/jobs/01a204bc-1026-70cc-9989-e83e45fd38a4")
        assert response.status_code == 404
        assert response.json()["status"] == 404

    async def test_bad_query_parameters_name_themselves(self, client):
        # docs/api.md, Errors: a wrong value is a 422; a cursor that is not usable is a 400.
        for params, field, status in [
            ({"limit": 0}, "limit", 422),
            ({"limit": 501}, "limit", 422),
            ({"cursor": "%%%"}, "cursor", 400),
        ]:
            response = await client.get("/jobs", params=params)
            assert response.status_code == status, response.text
            assert field in [e["field"] for e in response.json()["errors"]]


class TestReadAndList:
    """GET returns what was stored; listing pages with a keyset cursor and filters."""

    async def test_get_returns_the_created_job(self, client):
        job = await create(client)
        response = await client.get(f"/jobs/{job['id']}")
        assert response.status_code == 200
        assert response.json() == job
        assert response.headers["etag"] == '"1"'

    async def test_pagination_walks_every_job_exactly_once(self, client):
        created = {(await create(client, name=f"job-{i:03}"))["id"] for i in range(57)}
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 10}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/jobs", params=params)).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 57
        assert set(seen) == created

    async def test_filters_by_name_prefix_paused_and_label(self, client):
        await create(client, name="billing-a", labels={"team": "billing"})
        await create(client, name="billing_b", paused=True, labels={"team": "billing"})
        await create(client, name="search-a", labels={"team": "search"})

        async def names(**params: Any) -> list[str]:
            return sorted(item["name"] for item in (await client.get("/jobs", params=params)).json()["items"])

        assert await names(name_prefix="billing") == ["billing-a", "billing_b"]
        assert await names(name_prefix="billing_") == ["billing_b"]  # `_` is literal, not a wildcard
        assert await names(paused="true") == ["billing_b"]
        assert await names(label="team:search") == ["search-a"]
        assert await names(label="team:billing", paused="false") == ["billing-a"]


class TestUpdate:
    """PATCH changes only what it names, recomputes next_run_at for timing fields, honours If-Match."""

    async def test_patch_changes_named_fields_and_bumps_version(self, client):
        job = await create(client)
        response = await client.patch(f"/jobs/{job['id']}", json={"description": "new", "timeout_s": 60})
        assert response.status_code == 200
        updated = response.json()
        assert (updated["description"], updated["timeout_s"], updated["version"]) == ("new", 60, 2)
        assert updated["next_run_at"] == job["next_run_at"]
        assert response.headers["etag"] == '"2"'

    async def test_patch_of_schedule_recomputes_next_run_at(self, client):
        job = await create(client)
        updated = (await client.patch(f"/jobs/{job['id']}", json={"schedule": "@every 10s"})).json()
        next_run = datetime.fromisoformat(updated["next_run_at"])
        assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(seconds=11)

    async def test_if_match_mismatch_is_412_and_changes_nothing(self, client):
        job = await create(client)
        response = await client.patch(
            f"/jobs/{job['id']}", json={"description": "x"}, headers={"If-Match": '"7"'}
        )
        assert response.status_code == 412
        assert (await client.get(f"/jobs/{job['id']}")).json()["version"] == 1

    async def test_if_match_with_current_etag_succeeds(self, client):
        job = await create(client)
        response = await client.patch(
            f"/jobs/{job['id']}", json={"description": "x"}, headers={"If-Match": '"1"'}
        )
        assert response.status_code == 200

    async def test_bad_patch_writes_nothing(self, client):
        job = await create(client)
        for body in [
            {"schedule": "0 0 30 2 *"},
            {"timezone": "Nowhere/City"},
            {"timeout_s": "9"},
            {"nope": 1},
        ]:
            response = await client.patch(f"/jobs/{job['id']}", json=body)
            assert response.status_code == 422, body
        assert (await client.get(f"/jobs/{job['id']}")).json() == job

    async def test_pause_and_resume(self, client):
        job = await create(client, schedule="@every 1m")
        paused = (await client.post(f"/jobs/{job['id']}/pause")).json()
        assert paused["paused"] is True
        assert paused["next_run_at"] is None
        resumed = (await client.post(f"/jobs/{job['id']}/resume")).json()
        assert resumed["paused"] is False
        assert datetime.fromisoformat(resumed["next_run_at"]) > datetime.now(UTC)

    async def test_delete_removes_the_job(self, client):
        job = await create(client)
        assert (await client.delete(f"/jobs/{job['id']}")).status_code == 204
        assert (await client.get(f"/jobs/{job['id']}")).status_code == 404
        assert (await client.delete(f"/jobs/{job['id']}")).status_code == 404


class TestSchedules:
    """next-runs and /schedules/preview expose the fire-time arithmetic."""

    async def test_next_runs_lists_upcoming_times(self, client):
        job = await create(client, schedule="*/15 * * * *", timezone="UTC")
        times = [
            datetime.fromisoformat(t)
            for t in (await client.get(f"/jobs/{job['id']}/next-runs?count=4")).json()["next"]
        ]
        assert len(times) == 4
        assert all(t.minute % 15 == 0 and t.second == 0 for t in times)
        assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(times))

    async def test_next_runs_count_is_bounded(self, client):
        job = await create(client)
        assert (await client.get(f"/jobs/{job['id']}/next-runs?count=101")).status_code == 422

    async def test_preview_validates_without_storing(self, client):
        response = await client.post("/schedules/preview", json={"schedule": "0 0 30 2 *"})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "schedule"
        response = await client.post(
            "/schedules/preview", json={"schedule": "@every 90m", "after": "2026-01-01T00:00:00Z", "count": 2}
        )
        assert response.status_code == 200
        assert response.json()["next"] == ["2026-01-01T01:30:00Z", "2026-01-01T03:00:00Z"]
        assert await job_count(client) == 0


class TestService:
    """Health, readiness and the API's own documents."""

    async def test_health_ready_docs_and_schema(self, client):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        schema = (await client.get("/schema/openapi.json")).json()
        assert "/jobs" in schema["paths"]
        assert "/jobs/{job_id}/runs" in schema["paths"]
        assert (await client.get("/docs", follow_redirects=False)).status_code in (301, 302, 307, 308)
