"""Jobs as code: a job written by name as a whole definition, and a declared set applied at once."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.api.schemas import JobCreate
from scheduler.db import connections
from scheduler.operations import declare
from tests.conftest import eventually, settings_for

# What the quota counts for the namespace: the count from before the shards, plus the shards.
COUNTED = (
    "SELECT coalesce((SELECT jobs FROM namespace_usage WHERE namespace = 'default'), 0)"
    " + coalesce((SELECT sum(jobs) FROM namespace_usage_shards WHERE namespace = 'default'), 0)"
)


def job(name: str, **fields: Any) -> dict[str, Any]:
    """A declared job of the billing service."""
    return {
        "name": name,
        "schedule": "*/5 * * * *",
        "action": {"type": "log", "payload": {"job": name}},
        "labels": {"service": "billing"},
        **fields,
    }


class TestPutByName:
    """PUT /jobs/by-name/{name}: 201 when it creates, 200 when it changes, nothing written when equal."""

    async def test_create_then_equal_then_change(self, client):
        first = await client.put("/jobs/by-name/export", json=job("export"))
        assert first.status_code == 201, first.text
        assert first.headers["location"] == f"/jobs/{first.json()['id']}"
        again = await client.put("/jobs/by-name/export", json=job("export"))
        assert again.status_code == 200
        assert again.json()["version"] == first.json()["version"]
        assert again.headers["etag"] == first.headers["etag"]
        assert again.json()["updated_at"] == first.json()["updated_at"]  # nothing was written
        changed = await client.put("/jobs/by-name/export", json=job("export", description="nightly"))
        assert changed.status_code == 200
        assert changed.json()["version"] == first.json()["version"] + 1
        assert changed.json()["description"] == "nightly"

    async def test_a_change_that_leaves_timing_alone_never_moves_the_next_run(self, client):
        first = (await client.put("/jobs/by-name/export", json=job("export", schedule="@every 1h"))).json()
        await asyncio.sleep(0)  # the clock moves on between the requests in any case
        later = (
            await client.put("/jobs/by-name/export", json=job("export", schedule="@every 1h", timeout_s=60))
        ).json()
        assert later["next_run_at"] == first["next_run_at"]
        moved = (await client.put("/jobs/by-name/export", json=job("export", schedule="@every 2h"))).json()
        assert moved["next_run_at"] != first["next_run_at"]

    async def test_a_whole_definition_resets_what_it_leaves_out(self, client):
        await client.put("/jobs/by-name/export", json=job("export", description="kept?", timeout_s=90))
        put = (await client.put("/jobs/by-name/export", json=job("export"))).json()
        assert (put["description"], put["timeout_s"]) == ("", 30)

    async def test_get_and_delete_by_name(self, client):
        await client.put("/jobs/by-name/export", json=job("export"))
        got = await client.get("/jobs/by-name/export")
        assert got.status_code == 200
        assert got.json()["name"] == "export"
        assert (await client.delete("/jobs/by-name/export")).status_code == 204
        assert (await client.get("/jobs/by-name/export")).status_code == 404
        assert (await client.delete("/jobs/by-name/export")).status_code == 404

    async def test_preconditions(self, client):
        created = await client.put("/jobs/by-name/export", json=job("export"), headers={"If-None-Match": "*"})
        assert created.status_code == 201
        refused = await client.put("/jobs/by-name/export", json=job("export"), headers={"If-None-Match": "*"})
        assert refused.status_code == 412
        stale = await client.put(
            "/jobs/by-name/export", json=job("export", description="x"), headers={"If-Match": '"999"'}
        )
        assert stale.status_code == 412
        fresh = await client.put(
            "/jobs/by-name/export",
            json=job("export", description="x"),
            headers={"If-Match": created.headers["etag"]},
        )
        assert fresh.status_code == 200
        assert (
            await client.put("/jobs/by-name/other", json=job("other"), headers={"If-Match": "*"})
        ).status_code == 412
        assert (await client.get("/jobs/by-name/other")).status_code == 404

    async def test_the_name_in_the_body_must_be_the_path_name(self, client):
        response = await client.put("/jobs/by-name/export", json=job("import"))
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "name"


class TestApply:
    """POST /jobs/apply: one transaction, a plan per job, prune guarded by the selector."""

    SELECTOR: ClassVar[dict[str, str]] = {"label": "service=billing"}

    async def apply(self, client, jobs: list[dict[str, Any]], **options: Any) -> Any:
        return await client.post("/jobs/apply", json={"jobs": jobs, "selector": self.SELECTOR, **options})

    async def test_the_same_set_twice_writes_nothing_the_second_time(self, client, sql):
        declared = [job("a"), job("b"), job("c")]
        first = await self.apply(client, declared)
        assert first.status_code == 200, first.text
        assert [(i["name"], i["change"]) for i in first.json()["items"]] == [
            ("a", "created"),
            ("b", "created"),
            ("c", "created"),
        ]
        versions = sql("SELECT name, version, updated_at FROM jobs ORDER BY name")
        second = (await self.apply(client, declared)).json()
        assert {i["change"] for i in second["items"]} == {"unchanged"}
        assert (second["created"], second["unchanged"]) == (0, 3)
        assert sql("SELECT name, version, updated_at FROM jobs ORDER BY name") == versions

    async def test_updates_name_the_fields_that_change_and_prune_deletes_the_rest(self, client, sql):
        await self.apply(client, [job("a"), job("b"), job("c")])
        plan = (
            await self.apply(
                client, [job("a", schedule="@hourly", timeout_s=5), job("b")], prune=True, dry_run=True
            )
        ).json()
        assert plan["dry_run"] is True
        assert [(i["name"], i["change"], i["fields"]) for i in plan["items"]] == [
            ("a", "updated", ["schedule", "timeout_s"]),
            ("b", "unchanged", []),
            ("c", "deleted", []),
        ]
        assert sql("SELECT count(*) FROM jobs") == [(3,)]  # the dry run wrote nothing
        assert sql("SELECT schedule FROM jobs WHERE name = 'a'") == [("*/5 * * * *",)]
        done = (
            await self.apply(client, [job("a", schedule="@hourly", timeout_s=5), job("b")], prune=True)
        ).json()
        assert [(i["name"], i["change"]) for i in done["items"]] == [
            ("a", "updated"),
            ("b", "unchanged"),
            ("c", "deleted"),
        ]
        assert sql("SELECT name FROM jobs ORDER BY name") == [("a",), ("b",)]
        assert sql(COUNTED) == [(2,)]

    async def test_prune_spares_jobs_outside_the_selector(self, client, sql):
        other = await client.post("/jobs", json=job("search-index", labels={"service": "search"}))
        assert other.status_code == 201
        await self.apply(client, [job("a")], prune=True)
        assert sql("SELECT name FROM jobs ORDER BY name") == [("a",), ("search-index",)]

    async def test_a_mismatched_selector_is_refused_and_deletes_nothing(self, client, sql):
        await self.apply(client, [job("a"), job("b")])
        response = await client.post(
            "/jobs/apply",
            json={"jobs": [job("a")], "selector": {"label": "service=biling"}, "prune": True},
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "jobs.0.labels"
        assert sql("SELECT name FROM jobs ORDER BY name") == [("a",), ("b",)]

    async def test_prune_without_a_selector_is_refused(self, client):
        response = await client.post("/jobs/apply", json={"jobs": [job("a")], "prune": True})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "selector"

    async def test_a_bad_job_anywhere_refuses_the_whole_set_naming_each_field(self, client, sql):
        response = await self.apply(
            client,
            [job("a"), job("b", schedule="61 * * * *"), job("c", timezone="Mars/Olympus"), job("a")],
        )
        assert response.status_code == 422, response.text
        fields = {error["field"] for error in response.json()["errors"]}
        assert fields == {"jobs.3.name"}  # a set that declares a name twice is refused before anything else
        response = await self.apply(
            client, [job("a"), job("b", schedule="61 * * * *"), job("c", timezone="Mars/Olympus")]
        )
        assert response.status_code == 422
        errors = response.json()["errors"]
        assert [e["field"] for e in errors] == ["jobs.1.schedule", "jobs.2.timezone"]
        assert "job 'b'" in errors[0]["message"]
        assert sql("SELECT count(*) FROM jobs") == [(0,)]

    async def test_the_quota_counts_the_whole_set(self, db_url, sql):
        app = create_app(settings_for(db_url, namespace_job_quota=2))
        async with AsyncTestClient(app=app) as client:
            response = await self.apply(client, [job("a"), job("b"), job("c")])
            assert response.status_code == 422
            assert "quota" in response.json()["detail"]
            assert sql("SELECT count(*) FROM jobs") == [(0,)]
            dry = await self.apply(client, [job("a"), job("b"), job("c")], dry_run=True)
            assert dry.status_code == 422  # the dry run's plan is the real one, quota included
            assert (await self.apply(client, [job("a"), job("b")])).status_code == 200

    async def test_concurrent_applies_of_overlapping_sets_never_half_apply(self, db_url, sql):
        app = create_app(settings_for(db_url))
        sets = [[job(f"j{i}", description=f"set {k}") for i in range(k, k + 30)] for k in range(0, 40, 10)]
        async with AsyncTestClient(app=app) as client:
            answers = await asyncio.gather(*(self.apply(client, declared) for declared in sets))
        assert [a.status_code for a in answers] == [200] * len(sets), [a.text for a in answers]
        # The outcome is that of the sets applied whole one after another, in some order: replaying
        # one of the orders gives exactly the stored descriptions (interleaved applies would not).
        rows = dict(sql("SELECT name, description FROM jobs"))
        assert len(rows) == 60

        def replayed(order: tuple[list[dict[str, Any]], ...]) -> dict[str, str]:
            marks: dict[str, str] = {}
            for declared in order:
                marks |= {d["name"]: d["description"] for d in declared}
            return marks

        assert any(replayed(order) == rows for order in itertools.permutations(sets))
        assert sql(COUNTED) == [(60,)]


class TestApplyTakesTurns:
    """Two applies in a namespace never interleave: the second waits for the first to commit."""

    async def test_a_second_apply_creating_the_same_jobs_waits_then_updates_them(self, db_url, sql):
        first = await connections.connect(db_url, application_name="apply-first")
        second = await connections.connect(db_url, application_name="apply-second")
        now = datetime.now(UTC)
        declared = [msgspec.convert(job(f"j{i}"), JobCreate) for i in range(5)]
        changed = [msgspec.convert(job(f"j{i}", description="second"), JobCreate) for i in range(3, 8)]
        selector = {"service": "billing"}
        async with first, second:
            await first.execute("BEGIN")
            made = await declare.apply(
                first,
                namespace="default",
                specs=declared,
                selector=selector,
                prune=False,
                dry_run=False,
                now=now,
                quota=100,
            )
            assert {item.change for item in made} == {declare.Change.CREATED}
            waiting = asyncio.create_task(
                declare.apply(
                    second,
                    namespace="default",
                    specs=changed,
                    selector=selector,
                    prune=False,
                    dry_run=False,
                    now=now,
                    quota=100,
                )
            )
            # The second apply waits on the namespace's turn, not on a half-made job.
            await eventually(
                lambda: sql(
                    "SELECT 1 FROM pg_stat_activity"
                    " WHERE application_name = 'apply-second' AND wait_event = 'advisory'"
                ),
                what="the second apply to wait for its turn",
            )
            await first.execute("COMMIT")
            plan = await waiting
        assert [(item.name, item.change) for item in plan] == [
            ("j3", declare.Change.UPDATED),
            ("j4", declare.Change.UPDATED),
            ("j5", declare.Change.CREATED),
            ("j6", declare.Change.CREATED),
            ("j7", declare.Change.CREATED),
        ]
        assert sql("SELECT count(*) FROM jobs") == [(8,)]
