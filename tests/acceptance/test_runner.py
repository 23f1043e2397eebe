"""Runner processes against a real PostgreSQL and real HTTP targets: fires, slots, actions, wake-ups."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.db.queries import q
from tests.conftest import eventually, wait_for
from tests.seed import job_rows


def seed_every_second(sql, count: int, *, first: datetime, grace_s: int) -> None:
    """``count`` log jobs (`seed-1`, ...) firing every second from ``first``, overlap allowed."""
    sql(
        *job_rows(
            count,
            prefix="seed-",
            schedule="@every 1s",
            anchor_at=first,
            next_run_at=first,
            action={"type": "log", "payload": {}},
            retry_max_attempts=3,
            retry_max_backoff_s=300,
            misfire_grace_s=grace_s,
            overlap="allow",
        )
    )


# A runner asleep and listening: its LISTEN connection has subscribed to its last channel, and
# after that its claim loop found nothing due and asked the database how long to sleep (with no
# job at all, its whole poll interval). Until that sleep ends only a notification wakes it.
LISTENING = """
SELECT state_change FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'scheduler-runner-listen'
  AND state = 'idle' AND query = %s
"""
ASKED_HOW_LONG_TO_SLEEP = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'scheduler-runner'
  AND state = 'idle' AND left(query, length(%(text)s)) = %(text)s AND query_start > %(since)s
"""


def runs_of(sql, job_id: str) -> list[tuple[Any, ...]]:
    return sql(
        "SELECT scheduled_for, status, trigger, attempt, http_status, output, error, started_at"
        " FROM runs WHERE job_id = %s ORDER BY scheduled_for, attempt",
        (job_id,),
    )


class TestFiring:
    """A runner fires jobs at their slots and records one run per slot."""

    async def test_one_second_schedule_produces_runs_at_its_slots(self, client, procs, sql):
        procs.runner()
        job = (
            await client.post(
                "/jobs",
                json={
                    "name": "tick",
                    "schedule": "@every 1s",
                    "action": {"type": "log", "payload": {"n": 1}},
                },
            )
        ).json()
        await eventually(
            lambda: sum(row[1] == "succeeded" for row in runs_of(sql, job["id"])) >= 4,
            what="four succeeded runs",
        )
        runs = [row for row in runs_of(sql, job["id"]) if row[1] == "succeeded"]
        slots = [row[0] for row in runs]
        assert all(row[2] == "schedule" for row in runs)
        assert all(slot.microsecond == 0 for slot in slots)
        assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots))
        anchor = datetime.fromisoformat(job["created_at"]).replace(microsecond=0)
        assert slots[0] == anchor + timedelta(seconds=1)
        page = (await client.get(f"/jobs/{job['id']}/runs")).json()
        assert page["items"][0]["status"] == "succeeded"
        assert (await client.get(f"/jobs/{job['id']}")).json()["last_run"]["status"] == "succeeded"

    async def test_cron_with_seconds_fires_on_matching_seconds(self, client, procs, sql):
        procs.runner()
        job = (
            await client.post(
                "/jobs",
                json={"name": "even", "schedule": "*/2 * * * * *", "action": {"type": "log", "payload": {}}},
            )
        ).json()
        await eventually(lambda: len(runs_of(sql, job["id"])) >= 3, what="three runs")
        assert all(row[0].second % 2 == 0 for row in runs_of(sql, job["id"]))

    async def test_one_time_job_fires_once_and_finishes(self, client, procs, sql):
        procs.runner()
        at = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0) + timedelta(seconds=1)
        job = (
            await client.post(
                "/jobs", json={"name": "once", "schedule": f"@at {at.isoformat()}", "action": {"type": "log"}}
            )
        ).json()
        await eventually(lambda: len(runs_of(sql, job["id"])) == 1, what="the one run")
        await eventually(
            lambda: sql("SELECT next_run_at FROM jobs WHERE id = %s", (job["id"],))[0][0] is None,
            what="next_run_at to clear",
        )
        assert runs_of(sql, job["id"])[0][0] == at
        assert (await client.get(f"/jobs/{job['id']}")).json()["next_run_at"] is None

    async def test_a_job_due_now_starts_at_once_when_notified(self, client, procs, sql):
        procs.runner(poll_interval_s=30)

        def asleep_and_listening() -> bool:
            listening = sql(LISTENING, (q("listen_secrets").decode(),))
            if not listening:
                return False
            # Up to its first parameter: the server shows `$1` where the query file says `%(...)s`.
            text = q("job_next_due").decode().split("%(")[0]
            return sql(ASKED_HOW_LONG_TO_SLEEP, {"text": text, "since": listening[0][0]})[0][0] > 0

        await eventually(asleep_and_listening, what="the runner to listen, then sleep its 30 s poll interval")
        at = datetime.now(UTC) + timedelta(milliseconds=500)
        job = (
            await client.post(
                "/jobs", json={"name": "soon", "schedule": f"@at {at.isoformat()}", "action": {"type": "log"}}
            )
        ).json()
        await eventually(lambda: runs_of(sql, job["id"]), timeout=10, what="the run")
        scheduled, started = runs_of(sql, job["id"])[0][0], runs_of(sql, job["id"])[0][7]
        # Without the notification the runner would sleep its 30 s poll interval first.
        assert started - scheduled < timedelta(seconds=2)

    async def test_paused_jobs_do_not_fire_while_an_active_one_does(self, client, procs, sql):
        """Paused at creation, by pause or by PATCH, and overdue: a runner firing beside them skips them."""

        async def create(name: str, **extra: Any) -> str:
            body = {"name": name, "schedule": "@every 1s", "action": {"type": "log"}} | extra
            response = await client.post("/jobs", json=body)
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        paused = [await create("paused-at-creation", paused=True), await create("paused-later")]
        patched = await create("patched")
        # Both are due before they are paused: a pause that left next_run_at would leave them due.
        await eventually(
            lambda: sql("SELECT count(*) FROM jobs WHERE next_run_at < now()")[0][0] == 2,
            what="the two unpaused jobs to be due",
        )
        assert (await client.post(f"/jobs/{paused[1]}/pause")).status_code == 200
        assert (await client.patch(f"/jobs/{patched}", json={"paused": True})).status_code == 200
        paused.append(patched)
        active = await create("active")
        procs.runner()
        # The positive control: its slots are later than the paused jobs' first ones, so three of
        # them fired mean the runner claimed through cycles in which the paused jobs were overdue.
        await eventually(
            lambda: sum(row[1] == "succeeded" for row in runs_of(sql, active)) >= 3,
            what="three runs of the active job",
        )
        assert [runs_of(sql, job_id) for job_id in paused] == [[], [], []]
        assert sql("SELECT count(*) FROM jobs WHERE paused AND next_run_at IS NOT NULL") == [(0,)]


class TestAJobWhoseActionCannotBeRead:
    """A stored action this runner cannot read (written by hand or by a newer version) stops that job only."""

    async def test_the_job_is_stopped_and_the_others_keep_firing(self, client, procs, sql):
        now = datetime.now(UTC).replace(microsecond=0)
        seed_every_second(sql, 1, first=now, grace_s=5)
        sql("""UPDATE jobs SET action = '{"type": "log", "payload": {}, "from_the_future": 1}'""")
        healthy = (
            await client.post(
                "/jobs", json={"name": "healthy", "schedule": "@every 1s", "action": {"type": "log"}}
            )
        ).json()
        runner = procs.runner()
        await eventually(
            lambda: sum(row[1] == "succeeded" for row in runs_of(sql, healthy["id"])) >= 3,
            what="three runs of the healthy job",
        )
        broken = sql("SELECT id, next_run_at FROM jobs WHERE name = 'seed-1'")[0]
        assert broken[1] is None  # stopped, not left due to fail every claim again
        assert runs_of(sql, str(broken[0])) == []
        assert "job_action_unreadable" in runner.output()
        assert "claim_failed" not in runner.output()


class TestManyRunners:
    """However many runners share the database, every slot gets exactly one run row."""

    @pytest.mark.parametrize("runners", [2, 4])
    def test_runners_never_record_a_slot_twice(self, procs, sql, runners):
        jobs = 2000
        now = datetime.now(UTC).replace(microsecond=0)
        # Every job is 3 slots behind, inside the misfire grace: each must fire each slot once.
        first = now - timedelta(seconds=3)
        seed_every_second(sql, jobs, first=first, grace_s=30)
        for _ in range(runners):
            procs.runner(claim_batch=200)
        horizon = now + timedelta(seconds=2)
        wait_for(
            lambda: sql("SELECT count(*) FROM jobs WHERE next_run_at <= %s", (horizon,))[0][0] == 0,
            timeout=90,
            what="every job to pass the horizon",
        )
        rows = sql(
            "SELECT count(*), count(DISTINCT (job_id, scheduled_for)) FROM runs WHERE scheduled_for <= %s",
            (horizon,),
        )[0]
        expected = jobs * 6  # slots now-3 .. now+2
        assert rows == (expected, expected)
        owners = sql("SELECT count(DISTINCT runner) FROM runs")[0][0]
        assert owners == runners  # the work was shared, not done by one


class TestHttpAction:
    """HTTP actions call real servers, keep status and output, and fail or time out visibly."""

    async def create_http_job(self, client, receiver, **extra: Any) -> dict[str, Any]:
        body = {
            "name": "hook",
            "schedule": "@every 1s",
            "action": {
                "type": "http",
                "url": receiver.url + "/hook",
                "body": {"kind": "tick"},
                "headers": {"X-Team": "a"},
            },
        } | extra
        response = await client.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    async def test_call_carries_body_headers_and_is_recorded(self, client, procs, sql, receiver):
        procs.runner()
        receiver.reply = b"accepted"
        job = await self.create_http_job(client, receiver)
        await eventually(lambda: receiver.count() >= 2, what="two calls")
        first = receiver.snapshot()[0]
        assert (first.method, first.path) == ("POST", "/hook")
        assert json.loads(first.body) == {"kind": "tick"}
        assert first.headers["content-type"] == "application/json"
        assert first.headers["x-team"] == "a"
        assert first.headers["webhook-id"].startswith("msg_")
        assert first.headers["user-agent"].startswith("pg-scheduler/")
        await eventually(
            lambda: any(row[1] == "succeeded" for row in runs_of(sql, job["id"])), what="a succeeded run"
        )
        done = next(row for row in runs_of(sql, job["id"]) if row[1] == "succeeded")
        assert (done[4], done[5]) == (200, "accepted")

    async def test_error_status_fails_the_run_and_schedules_a_retry(self, client, procs, sql, receiver):
        procs.runner()
        receiver.status = 503
        job = await self.create_http_job(
            client,
            receiver,
            schedule="@every 1h",
            start_at=(datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        )
        await eventually(lambda: len(runs_of(sql, job["id"])) >= 2, what="the failure and its retry")
        first, second = runs_of(sql, job["id"])[:2]
        assert (first[1], first[3], first[4]) == ("failed", 1, 503)
        assert "503" in first[6]
        assert (second[2], second[3]) == ("retry", 2)
        assert second[0] == first[0]  # the same slot

    async def test_slow_target_times_out(self, client, procs, sql, receiver):
        procs.runner()
        receiver.delay_s = 3
        job = await self.create_http_job(
            client,
            receiver,
            schedule="@every 1h",
            start_at=(datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
            timeout_s=1,
            retry={"max_attempts": 1},
        )
        await eventually(
            lambda: any(row[1] == "timed_out" for row in runs_of(sql, job["id"])),
            timeout=20,
            what="a timeout",
        )
        run = runs_of(sql, job["id"])[0]
        assert run[1] == "timed_out"
        assert "timeout_s=1" in run[6]
