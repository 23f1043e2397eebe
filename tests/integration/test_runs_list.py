"""GET /runs: the namespace's runs across its jobs, newest first, filtered and paged by keyset."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.ids import uuid7
from scheduler.operations.pages import encode_cursor
from tests.conftest import create_api_key, settings_for
from tests.integration.test_query_plans import (
    indexes_read,
    partitions_of,
    partitions_with_rows,
    plan_of,
    planned,
)

__all__ = ["planned"]  # the class-scoped database of seeded jobs and runs, used below

Sql = Callable[..., list[tuple[Any, ...]]]
NOW = datetime.now(UTC).replace(microsecond=0)


async def _job(client: AsyncTestClient[Any], name: str, headers: dict[str, str] | None = None) -> str:
    made = await client.post(
        "/jobs", json={"name": name, "schedule": "@every 1h", "action": {"type": "log"}}, headers=headers
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _run(
    sql: Sql,
    job_id: str,
    *,
    ago_s: float,
    status: str = "succeeded",
    trigger: str = "schedule",
    attempt: int = 1,
) -> str:
    """Record a finished run of ``job_id`` whose slot was ``ago_s`` seconds ago."""
    slot = NOW - timedelta(seconds=ago_s)
    run_id = uuid7(slot)
    sql(
        "INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, started_at, finished_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (run_id, job_id, slot, trigger, attempt, status, slot, slot),
    )
    return str(run_id)


async def _all_pages(
    client: AsyncTestClient[Any], query: str, headers: dict[str, str] | None = None
) -> list[str]:
    seen: list[str] = []
    cursor = ""
    while True:
        page = await client.get(f"/runs?{query}{cursor}", headers=headers)
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        if page.json()["next_cursor"] is None:
            return seen
        cursor = f"&cursor={page.json()['next_cursor']}"


class TestOrderAndPaging:
    """Runs of every job come newest slot first, and pages walk them all exactly once."""

    async def test_runs_of_several_jobs_come_newest_first(
        self, client: AsyncTestClient[Any], sql: Sql
    ) -> None:
        """The listing interleaves jobs by slot, newest first."""
        first, second = await _job(client, "first"), await _job(client, "second")
        oldest = _run(sql, first, ago_s=300)
        middle = _run(sql, second, ago_s=200)
        newest = _run(sql, first, ago_s=100)
        page = await client.get("/runs")
        assert page.status_code == 200, page.text
        assert [item["id"] for item in page.json()["items"]] == [newest, middle, oldest]
        assert page.json()["next_cursor"] is None
        assert page.json()["items"][0]["job_id"] == first

    async def test_pages_cover_every_run_once_in_order(self, client: AsyncTestClient[Any], sql: Sql) -> None:
        """Following next_cursor with a small limit yields the same sequence as one big page."""
        jobs = [await _job(client, f"job-{n}") for n in range(3)]
        made = [_run(sql, jobs[n % 3], ago_s=10 * n + 1) for n in range(23)]
        walked = await _all_pages(client, "limit=5")
        assert walked == made  # made from newest to oldest
        big = await client.get("/runs?limit=500")
        assert [item["id"] for item in big.json()["items"]] == made

    async def test_runs_older_than_a_day_and_manual_runs_are_listed(
        self, client: AsyncTestClient[Any], sql: Sql
    ) -> None:
        """Pruning never hides runs: one from three days ago and one just triggered both appear."""
        job = await _job(client, "spread")
        old = _run(sql, job, ago_s=3 * 86400)
        triggered = await client.post(f"/jobs/{job}/trigger")
        assert triggered.status_code == 202, triggered.text
        ids = await _all_pages(client, "limit=1")
        assert ids == [triggered.json()["id"], old]


class TestFilters:
    """Each filter narrows the listing to what it names."""

    async def test_status_trigger_and_job_filters(self, client: AsyncTestClient[Any], sql: Sql) -> None:
        """status, trigger and job_id select exactly the matching runs, and combine."""
        alpha, beta = await _job(client, "alpha"), await _job(client, "beta")
        failed_alpha = _run(sql, alpha, ago_s=50, status="failed")
        manual_beta = _run(sql, beta, ago_s=40, trigger="manual")
        failed_beta = _run(sql, beta, ago_s=30, status="failed", trigger="retry", attempt=2)
        ok_alpha = _run(sql, alpha, ago_s=20)
        assert await _all_pages(client, "status=failed") == [failed_beta, failed_alpha]
        assert await _all_pages(client, "trigger=manual") == [manual_beta]
        assert await _all_pages(client, f"job_id={alpha}") == [ok_alpha, failed_alpha]
        assert await _all_pages(client, f"job_id={beta}&status=failed&limit=1") == [failed_beta]
        assert await _all_pages(client, f"job_id={UUID(int=7)}") == []

    async def test_since_and_until_bound_the_slot(self, client: AsyncTestClient[Any], sql: Sql) -> None:
        """Since is inclusive and until exclusive, both on scheduled_for: failures of the last hour."""
        job = await _job(client, "windowed")
        _run(sql, job, ago_s=7200, status="failed")
        recent = _run(sql, job, ago_s=1800, status="failed")
        _run(sql, job, ago_s=600, status="succeeded")
        hour_ago = (NOW - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        assert await _all_pages(client, f"status=failed&since={hour_ago}") == [recent]
        until = (NOW - timedelta(seconds=1800)).isoformat().replace("+00:00", "Z")
        assert len(await _all_pages(client, f"until={until}")) == 1
        assert len(await _all_pages(client, f"since={until}")) == 2


class TestOddCursors:
    """A cursor that decodes to some UUID pages from it, whatever its time."""

    async def test_a_uuid_past_the_year_9999_is_a_cursor_before_everything(
        self, client: AsyncTestClient[Any], sql: Sql
    ) -> None:
        """The largest UUIDv7 lists every run; the nil UUID lists none."""
        job = await _job(client, "edge")
        made = _run(sql, job, ago_s=5)
        top = encode_cursor("ffffffff-ffff-7fff-bfff-ffffffffffff")
        bottom = encode_cursor("00000000-0000-0000-0000-000000000000")
        assert [item["id"] for item in (await client.get(f"/runs?cursor={top}")).json()["items"]] == [made]
        assert (await client.get(f"/runs?cursor={bottom}")).json()["items"] == []


class TestBadParameters:
    """A bad parameter is a 4xx problem that names it."""

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("status=finished", "status"),
            ("trigger=cron", "trigger"),
            ("job_id=42", "job_id"),
            ("since=yesterday", "since"),
            ("until=2026-11-23T08:00:00", "until"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("cursor=not-ours", "cursor"),
        ],
    )
    async def test_bad_parameter_is_named(self, client: AsyncTestClient[Any], query: str, field: str) -> None:
        """The problem's detail names the parameter."""
        answer = await client.get(f"/runs?{query}")
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert field in answer.json()["detail"]


class TestTenancy:
    """Another namespace's runs never appear, whatever the filters."""

    async def test_a_key_lists_only_its_namespace(self, db_url: str, sql: Sql) -> None:
        """Each key sees its own runs; filtering by the other's job id finds nothing."""
        app = create_app(settings_for(db_url, auth="required"))
        async with AsyncTestClient(app=app) as client:
            alpha = {"Authorization": f"Bearer {await create_api_key(db_url, 'alpha')}"}
            beta = {"Authorization": f"Bearer {await create_api_key(db_url, 'beta')}"}
            alpha_job = await _job(client, "report", alpha)
            beta_job = await _job(client, "report", beta)
            alpha_runs = [_run(sql, alpha_job, ago_s=n + 1) for n in range(3)]
            beta_runs = [_run(sql, beta_job, ago_s=n + 1.5) for n in range(2)]
            assert await _all_pages(client, "limit=2", alpha) == alpha_runs
            assert await _all_pages(client, "", beta) == beta_runs
            assert await _all_pages(client, f"job_id={alpha_job}", beta) == []
            anonymous = await client.get("/runs")
            assert anonymous.status_code == 401


class TestOpenApi:
    """The operation is in the OpenAPI document."""

    async def test_list_runs_is_documented(self, client: AsyncTestClient[Any]) -> None:
        """GET /runs has operation id listRuns, its filters and its problems."""
        document = (await client.get("/schema/openapi.json")).json()
        operation = document["paths"]["/runs"]["get"]
        assert operation["operationId"] == "listRuns"
        names = {parameter["name"] for parameter in operation["parameters"]}
        assert {"status", "trigger", "job_id", "since", "until", "limit", "cursor"} <= names
        assert {"400", "401"} <= set(operation["responses"])


class TestQueryPlans:
    """The namespace-wide listing and the console's outcome strip read indexes, never a whole partition."""

    def test_the_listing_merges_backward_primary_key_scans(self, planned: Any) -> None:
        """GET /runs walks each partition's primary key newest first and stops at the page: no sort."""
        nodes = plan_of(
            planned,
            "run_list_namespace",
            {
                "namespace": "default",
                "before_id": UUID(int=2**128 - 1),
                "before_slot": NOW + timedelta(hours=1),
                "since": datetime(1, 1, 2, tzinfo=UTC),
                "statuses": None,
                "labels": "{}",
                "trigger": None,
                "limit": 50,
            },
        )
        pkeys = partitions_of(planned, "runs_pkey")
        read = indexes_read(nodes, "runs")
        for partition in partitions_with_rows(planned):
            assert read[partition] <= pkeys, (partition, read[partition])
        assert not any(n["Node Type"] == "Sort" for n in nodes)

    def test_the_outcome_strip_reads_each_jobs_runs_by_slot(self, planned: Any) -> None:
        """The last 50 slots of each job on a console page come from runs_slot_key, newest first."""
        ids = [row[0] for row in planned.execute(b"SELECT id FROM jobs ORDER BY id LIMIT 50").fetchall()]
        params = {"ids": ids, "before_slot": NOW + timedelta(hours=1)}
        nodes = plan_of(planned, "console_job_recent_slots", params)
        slot_keys = partitions_of(planned, "runs_slot_key")
        read = indexes_read(nodes, "runs")
        for partition in partitions_with_rows(planned):
            assert read[partition] <= slot_keys, (partition, read[partition])
