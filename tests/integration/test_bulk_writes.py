"""An apply writes its creates and its updates each in one statement: every job as one write of it would be.

A create and an apply of jobs due within a minute wake the runners at commit, whichever path wrote them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from tests.conftest import eventually

# Definitions that differ in every column the batched statements carry, nulls beside values.
DEFINITIONS: list[dict[str, Any]] = [
    {"schedule": "@every 1h", "action": {"type": "log"}},
    {
        "description": "nightly",
        "schedule": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "start_at": "2030-01-01T00:00:00Z",
        "end_at": "2031-01-01T00:00:00Z",
        "action": {"type": "http", "method": "POST", "url": "http://127.0.0.1:9/hook", "body": {"n": 1}},
        "timeout_s": 90,
        "retry": {"max_attempts": 5, "min_backoff_s": 2.5, "max_backoff_s": 60},
        "misfire": {"policy": "skip"},
        "overlap": "allow",
        "paused": True,
        "labels": {"team": "billing", "tier": "1"},
        "notify": {"url": "http://127.0.0.1:9/alerts", "after": 2, "pause_after": 4},
        "exclusions": {"dates": ["2030-12-25"], "calendars": ["* * * * 0"]},
    },
    {
        "schedules": [
            {"schedule": "0 9 * * 1-5", "timezone": "America/New_York"},
            {"schedule": "@every 15m", "paused": True},
        ],
        "action": {"type": "log", "payload": {"k": "v"}},
    },
]
# What a definition decides, leaving out what differs between two jobs made of it (ids, names,
# clocks, and the first fire, which moves with the instant each was made).
KEPT = (
    "description",
    "schedule",
    "timezone",
    "start_at",
    "end_at",
    "action",
    "timeout_s",
    "retry",
    "misfire",
    "overlap",
    "paused",
    "labels",
    "notify",
    "exclusions",
)


def decided(job: dict[str, Any]) -> dict[str, Any]:
    entries = [{k: v for k, v in entry.items() if k != "id"} for entry in job["schedules"]]
    return {name: job[name] for name in KEPT} | {"schedules": entries}


class TestApplyWritesEachJobAsOneWriteWould:
    """A batched apply stores each job exactly as creating or replacing it by name stores it."""

    async def test_applied_jobs_equal_the_same_definitions_written_one_by_one(self, client):
        declared = [{"name": f"applied-{i}", **d} for i, d in enumerate(DEFINITIONS)]
        applied = await client.post("/jobs/apply", json={"jobs": declared})
        assert applied.status_code == 200, applied.text
        assert applied.json()["created"] == len(DEFINITIONS)
        for i, definition in enumerate(DEFINITIONS):
            alone = await client.put(f"/jobs/by-name/alone-{i}", json={"name": f"alone-{i}", **definition})
            assert alone.status_code == 201, alone.text
            batched = await client.get(f"/jobs/by-name/applied-{i}")
            assert decided(batched.json()) == decided(alone.json())
            assert batched.headers["etag"] == '"1"'

        # The same set with every job changed: updates in one statement, each version moved on.
        changed = [{**d, "description": "changed", "labels": {"changed": "yes"}} for d in declared]
        again = await client.post("/jobs/apply", json={"jobs": changed})
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["updated"] == len(DEFINITIONS)
        assert {item["version"] for item in body["items"]} == {2}
        for i, definition in enumerate(DEFINITIONS):
            alone = await client.put(
                f"/jobs/by-name/alone-{i}",
                json={
                    "name": f"alone-{i}",
                    **definition,
                    "description": "changed",
                    "labels": {"changed": "yes"},
                },
            )
            assert alone.status_code == 200, alone.text
            batched = await client.get(f"/jobs/by-name/applied-{i}")
            assert decided(batched.json()) == decided(alone.json())
            assert batched.json()["description"] == "changed"
            assert batched.headers["etag"] == '"2"'

    async def test_an_apply_counts_its_creates_against_the_quota_once_written(self, client, sql):
        declared = [
            {"name": f"counted-{i}", "schedule": "@daily", "action": {"type": "log"}} for i in range(50)
        ]
        assert (await client.post("/jobs/apply", json={"jobs": declared})).status_code == 200
        counted = sql(
            "SELECT coalesce((SELECT jobs FROM namespace_usage WHERE namespace = 'default'), 0)"
            " + (SELECT sum(jobs) FROM namespace_usage_shards WHERE namespace = 'default')"
        )
        assert counted == [(50,)]
        assert sql("SELECT count(*) FROM jobs") == [(50,)]


class TestWritesDueSoonWakeTheRunners:
    """A job due within a minute, made by POST /jobs or by an apply, wakes the runners at commit."""

    async def test_a_create_and_an_apply_of_jobs_due_soon_each_send_a_wake(self, client, db_url):
        heard: list[str] = []
        listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
        async with listener:
            await listener.execute("LISTEN scheduler_wake")

            async def listen() -> None:
                async for note in listener.notifies():
                    heard.append(note.channel)  # noqa: PERF401 - heard as they come, not at the end

            task = asyncio.create_task(listen())
            try:
                made = await client.post(
                    "/jobs", json={"name": "soon", "schedule": "@every 1s", "action": {"type": "log"}}
                )
                assert made.status_code == 201
                await eventually(lambda: len(heard) >= 1, timeout=10, what="the create's wake")
                declared = [
                    {"name": f"soon-{i}", "schedule": "@every 1s", "action": {"type": "log"}}
                    for i in range(3)
                ]
                assert (await client.post("/jobs/apply", json={"jobs": declared})).status_code == 200
                await eventually(lambda: len(heard) >= 2, timeout=10, what="the apply's wake")
            finally:
                task.cancel()


class TestPruneDeletesInBulkAndCancelsRuns:
    """A prune deletes idle jobs together and still cancels the unfinished runs of the others."""

    async def test_a_prune_cancels_a_pruned_jobs_pending_run_and_counts_every_deletion(self, client, sql):
        labelled = {"schedule": "@daily", "action": {"type": "log"}, "labels": {"team": "a"}}
        made = [await client.post("/jobs", json={"name": f"old-{i}", **labelled}) for i in range(4)]
        assert {r.status_code for r in made} == {201}
        busy = made[0].json()["id"]
        assert (await client.post(f"/jobs/{busy}/trigger")).status_code == 202
        assert sql("SELECT active_runs FROM jobs WHERE id = %s", (busy,)) == [(1,)]
        applied = await client.post(
            "/jobs/apply",
            json={"jobs": [{"name": "kept", **labelled}], "selector": {"label": "team=a"}, "prune": True},
        )
        assert applied.status_code == 200, applied.text
        body = applied.json()
        assert (body["created"], body["deleted"]) == (1, 4)
        assert sorted(i["name"] for i in body["items"] if i["change"] == "deleted") == [
            f"old-{i}" for i in range(4)
        ]
        assert sql("SELECT name FROM jobs") == [("kept",)]
        assert sql("SELECT status::text, error FROM runs WHERE job_id = %s", (busy,)) == [
            ("cancelled", "job deleted")
        ]
        counted = sql(
            "SELECT coalesce((SELECT jobs FROM namespace_usage WHERE namespace = 'default'), 0)"
            " + (SELECT sum(jobs) FROM namespace_usage_shards WHERE namespace = 'default')"
        )
        assert counted == [(1,)]
