"""The runner's services one round at a time, in-process against real PostgreSQL, time passed in.

Each test seeds rows, calls a service's ``run_once(now=...)`` (or a step of the cycle) and reads
the rows back: what the end-to-end tests prove with killed and frozen processes over seconds of
wall clock, these prove in milliseconds, at the instants they choose.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
import structlog

from scheduler.db import store
from scheduler.domain.models import Outcome, OverlapPolicy, RetryPolicy, RunStatus, RunTrigger
from scheduler.ids import uuid7
from scheduler.metrics import RunnerMetrics
from scheduler.runner.completer import Completion
from scheduler.runner.services.backlog import BacklogConfig
from scheduler.runner.services.heartbeat import Heartbeat, HeartbeatConfig
from scheduler.runner.services.listener import Heard, Listener
from scheduler.runner.services.partitions import PartitionConfig, PartitionKeeper
from scheduler.runner.services.rescuer import RescuerConfig
from scheduler.runner.supervise import keep_running
from tests.conftest import eventually, start_run

SLOT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


async def make_job(client, name: str = "job", **body: Any) -> UUID:
    """A job whose own schedule stays out of the way (its first slot a year ahead)."""
    body = {
        "name": name,
        "schedule": "@every 1h",
        "start_at": (datetime.now(UTC) + timedelta(days=365)).isoformat(),
        "action": {"type": "log"},
        **body,
    }
    response = await client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return UUID(response.json()["id"])


def attempts(sql, job_id: UUID) -> list[tuple[Any, ...]]:
    return sql(
        "SELECT attempt, trigger, status, runner, error FROM runs WHERE job_id = %s ORDER BY attempt",
        (job_id,),
    )


def active_runs(sql, job_id: UUID) -> int:
    return int(sql("SELECT active_runs FROM jobs WHERE id = %s", (job_id,))[0][0])


class TestRescuer:
    """A run whose lease ran out is recorded lost and retried as its policy says; a live one is left alone."""

    async def test_an_expired_lease_is_rescued_as_lost_and_its_slot_retried(self, runner_parts, client, sql):
        job_id = await make_job(client, retry={"max_attempts": 3, "min_backoff_s": 0, "max_backoff_s": 0})
        started = datetime.now(UTC)
        await start_run(runner_parts, job_id, slot=SLOT, at=started, lease_s=30)

        early = await runner_parts.rescuer.run_once(now=started + timedelta(seconds=29))
        assert (early.found, early.rescued, early.retried) == (0, 0, 0)
        assert attempts(sql, job_id)[0][2] == "running"

        late = await runner_parts.rescuer.run_once(now=started + timedelta(seconds=31))

        assert (late.found, late.rescued, late.retried) == (1, 1, 1)
        (lost, retry) = attempts(sql, job_id)
        assert lost[:3] == (1, "schedule", "lost")
        assert lost[4] == "lease expired: runner runner-that-dies stopped renewing it"
        assert retry[:3] == (2, "retry", "pending")
        assert active_runs(sql, job_id) == 1  # the lost attempt ended, the retry waits

    async def test_a_run_with_no_attempt_left_ends_lost_and_frees_its_job(self, runner_parts, client, sql):
        job_id = await make_job(client, retry={"max_attempts": 1})
        started = datetime.now(UTC)
        await start_run(runner_parts, job_id, slot=SLOT, at=started, lease_s=5)

        counts = await runner_parts.rescuer.run_once(now=started + timedelta(seconds=6))

        assert (counts.found, counts.rescued, counts.retried) == (1, 1, 0)
        assert [row[2] for row in attempts(sql, job_id)] == ["lost"]
        assert active_runs(sql, job_id) == 0

    async def test_the_runner_that_wakes_after_the_rescue_cannot_overwrite_it(
        self, runner_parts, client, sql
    ):
        job_id = await make_job(client, retry={"max_attempts": 1})
        started = datetime.now(UTC)
        lease = await start_run(runner_parts, job_id, slot=SLOT, at=started, lease_s=5)
        await runner_parts.rescuer.run_once(now=started + timedelta(seconds=6))

        late_answer = Completion(
            fenced=store.FencedOutcome(
                run_id=lease.run_id,
                job_id=job_id,
                scheduled_for=lease.scheduled_for,
                lease_token=lease.lease_token,
                outcome=Outcome(status=RunStatus.SUCCEEDED, duration_ms=7, http_status=200),
            ),
            attempt=1,
            retry=RetryPolicy(max_attempts=1),
            overlap=OverlapPolicy.SKIP,
        )
        counts = await runner_parts.completer.complete([late_answer])

        assert counts.accepted == set()
        assert [row[2] for row in attempts(sql, job_id)] == ["lost"]

    async def test_a_run_ended_by_its_runner_first_is_not_rescued(self, runner_parts, client, sql):
        job_id = await make_job(client)
        started = datetime.now(UTC)
        lease = await start_run(runner_parts, job_id, slot=SLOT, at=started, lease_s=5)
        ended = Completion(
            fenced=store.FencedOutcome(
                run_id=lease.run_id,
                job_id=job_id,
                scheduled_for=lease.scheduled_for,
                lease_token=lease.lease_token,
                outcome=Outcome(status=RunStatus.SUCCEEDED, duration_ms=3),
            ),
            attempt=1,
            retry=RetryPolicy(),
            overlap=OverlapPolicy.SKIP,
        )
        assert (await runner_parts.completer.complete([ended])).written == 1

        counts = await runner_parts.rescuer.run_once(now=started + timedelta(hours=1))

        assert counts.found == 0
        assert [row[2] for row in attempts(sql, job_id)] == ["succeeded"]

    def test_a_config_that_cannot_sweep_is_refused(self):
        with pytest.raises(ValueError, match="lease_s"):
            RescuerConfig(lease_s=0)
        with pytest.raises(ValueError, match="batch"):
            RescuerConfig(lease_s=30, batch=0)
        assert RescuerConfig(lease_s=30).every_s == 5.0
        assert RescuerConfig(lease_s=3).every_s == 1.0
        assert RescuerConfig(lease_s=0.3).every_s == 0.2


class TestHeartbeat:
    """Each round renews every executing call's lease from its own now, and stops the calls it lost."""

    async def test_leases_run_a_lease_past_the_renewal_and_a_cancelled_run_is_lost(
        self, runner_parts, client, sql
    ):
        started = datetime.now(UTC)
        jobs = [await make_job(client, f"job-{i}") for i in range(3)]
        leases = [await start_run(runner_parts, job_id, slot=SLOT, at=started, lease_s=5) for job_id in jobs]
        sql(
            "UPDATE runs SET status = 'cancelled', lease_expires_at = NULL WHERE id = %s", (leases[2].run_id,)
        )
        lost: list[UUID] = []

        def lose(run_id: UUID) -> bool:
            lost.append(run_id)
            return True

        heartbeat = Heartbeat(
            HeartbeatConfig(lease_s=30, batch=2),  # two statements for three leases
            runner_parts.runner.pool,
            leases=lambda: leases,
            lose=lose,
        )
        renewed_at = started + timedelta(seconds=4)

        counts = await heartbeat.run_once(now=renewed_at)

        assert (counts.renewed, counts.lost) == (2, 1)
        assert lost == [leases[2].run_id]
        expiries = sql(
            "SELECT lease_expires_at FROM runs WHERE id = ANY(%s) AND status = 'running'",
            ([lease.run_id for lease in leases],),
        )
        assert [row[0] for row in expiries] == [renewed_at + timedelta(seconds=30)] * 2

    async def test_a_lease_taken_over_by_another_token_is_not_renewed(self, runner_parts, client):
        job_id = await make_job(client)
        lease = await start_run(runner_parts, job_id, slot=SLOT, at=datetime.now(UTC), lease_s=5)
        stale = store.Lease(run_id=lease.run_id, scheduled_for=lease.scheduled_for, lease_token=uuid4())
        heartbeat = Heartbeat(
            HeartbeatConfig(lease_s=30), runner_parts.runner.pool, leases=lambda: [stale], lose=lambda _: True
        )

        counts = await heartbeat.run_once()

        assert (counts.renewed, counts.lost) == (0, 1)

    async def test_with_nothing_executing_a_round_touches_nothing(self, runner_parts):
        counts = await runner_parts.heartbeat.run_once()
        assert (counts.renewed, counts.lost) == (0, 0)

    def test_renewals_come_three_times_a_lease_unless_told(self):
        assert HeartbeatConfig(lease_s=30).every_s == 10.0
        assert HeartbeatConfig(lease_s=0.3).every_s == 0.2
        assert HeartbeatConfig(lease_s=30, interval_s=2).every_s == 2
        with pytest.raises(ValueError, match="shorter than the lease"):
            HeartbeatConfig(lease_s=5, interval_s=5)


def partitions(sql) -> set[str]:
    rows = sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'runs'::regclass AND c.relname ~ '^runs_[0-9]{8}$'"
    )
    return {row[0] for row in rows}


def days(first: date, count: int) -> set[str]:
    return {(first + timedelta(days=n)).strftime("runs_%Y%m%d") for n in range(count)}


class TestPartitionKeeper:
    """Partitions of runs exist from the day before today to a week ahead; older ones are dropped."""

    async def test_a_round_makes_the_coming_week_and_drops_what_the_retention_left_behind(
        self, runner_parts, sql
    ):
        before = partitions(sql)  # the migration made today's fortnight
        now = datetime(2030, 1, 1, 23, 30, tzinfo=UTC)
        keeper = PartitionKeeper(
            PartitionConfig(retention_days=30), runner_parts.runner.pool, log=structlog.get_logger()
        )

        done = await keeper.run_once(now=now)

        assert (done.locked, done.busy) == (True, False)
        assert partitions(sql) == days(date(2029, 12, 31), 9)  # 31 Dec to 8 Jan
        assert done.created == 9
        assert done.dropped == len(before)  # every one of them is older than 2 Dec 2029
        again = await keeper.run_once(now=now)
        assert (again.created, again.dropped) == (0, 0)

    async def test_the_retention_keeps_exactly_its_days(self, runner_parts, sql):
        # A fixed instant, and the partitions that exist compared by their day: the test database's
        # template was migrated on whichever day the session began, perhaps before a midnight.
        now = datetime.combine(datetime.now(UTC).date(), time(12), tzinfo=UTC)
        today = now.date()
        sql("SELECT run_partitions_ensure(%s, %s)", (today - timedelta(days=45), today - timedelta(days=29)))
        before = partitions(sql)
        keeper = PartitionKeeper(
            PartitionConfig(retention_days=30), runner_parts.runner.pool, log=structlog.get_logger()
        )

        done = await keeper.run_once(now=now)

        # Every day from 45 back to 31 back is gone; 30 back and later stay, and the days from
        # yesterday to a week ahead exist.
        cutoff = (today - timedelta(days=30)).strftime("runs_%Y%m%d")
        kept = {name for name in before if name >= cutoff}
        assert partitions(sql) == kept | days(today - timedelta(days=1), 9)
        assert done.dropped == len(before - kept) >= 15

    async def test_a_round_another_runner_is_doing_is_skipped(self, runner_parts, db_url, sql):
        before = partitions(sql)
        with psycopg.connect(db_url) as holder:
            holder.execute(b"SELECT pg_advisory_xact_lock(7262019385)")  # maintenance_try_lock's key
            done = await runner_parts.partitions.run_once(now=datetime(2030, 1, 1, tzinfo=UTC))
            holder.rollback()
        assert done.locked is False
        assert partitions(sql) == before

    def test_a_retention_that_would_drop_today_is_refused(self):
        with pytest.raises(ValueError, match="retention_days"):
            PartitionConfig(retention_days=0)


class TestBacklogGauge:
    """The gauge counts the jobs due at its now and not yet claimed."""

    async def test_it_counts_due_jobs_at_the_instant_given(self, runner_parts, client, sql):
        for i in range(5):
            await make_job(client, f"job-{i}")
        sql("UPDATE jobs SET next_run_at = %s WHERE name IN ('job-0', 'job-1', 'job-2')", (SLOT,))
        sql("UPDATE jobs SET next_run_at = %s WHERE name = 'job-3'", (SLOT + timedelta(hours=1),))

        assert (await runner_parts.backlog.run_once(now=SLOT - timedelta(seconds=1))).due == 0
        assert (await runner_parts.backlog.run_once(now=SLOT)).due == 3
        assert (await runner_parts.backlog.run_once(now=SLOT + timedelta(hours=2))).due == 4
        assert runner_parts.runner.metrics.registry.get_sample_value("scheduler_due_backlog") == 4

    def test_an_interval_of_zero_is_refused(self):
        with pytest.raises(ValueError, match="interval_s"):
            BacklogConfig(interval_s=0)


class TestListener:
    """Notifications wake the claim loop, stop cancelled calls and drop rotated secrets, across reconnects."""

    def test_each_channel_reaches_its_handler_and_nothing_else(self, db_url):
        run_id = uuid4()
        stopped: list[UUID] = []
        forgotten: list[str] = []
        woken: list[bool] = []
        listener = Listener(
            db_url,
            on_wake=lambda: woken.append(True),
            on_cancel=stopped.append,
            on_secrets=forgotten.append,
            log=structlog.get_logger(),
        )

        assert listener.handle("scheduler_cancel", str(run_id)) is Heard.CANCEL
        assert listener.handle("scheduler_cancel", "not-a-uuid") is Heard.IGNORED
        assert listener.handle("scheduler_secrets", "billing") is Heard.SECRETS
        assert listener.handle("scheduler_wake", "") is Heard.WAKE
        assert listener.handle("elsewhere", "") is Heard.IGNORED
        assert (stopped, forgotten, woken) == ([run_id], ["billing"], [True])

    async def test_a_notification_arrives_and_a_cut_connection_is_replaced(self, db_url, sql):
        stopped: list[UUID] = []
        woken: list[bool] = []
        listener = Listener(
            db_url,
            on_wake=lambda: woken.append(True),
            on_cancel=stopped.append,
            on_secrets=lambda _: None,
            log=structlog.get_logger(),
        )
        loop = asyncio.create_task(
            keep_running("listen", listener.listen_once, log=structlog.get_logger(), metrics=RunnerMetrics())
        )
        try:
            await eventually(lambda: woken, what="the wake that follows subscribing")
            first = uuid4()
            await eventually(
                lambda: sql("SELECT pg_notify('scheduler_cancel', %s)", (str(first),)) and first in stopped,
                what="the cancel notification",
            )
            sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'scheduler-runner-listen' AND datname = current_database()"
            )
            await eventually(lambda: len(woken) >= 2, what="the wake after subscribing again")
            second = uuid4()
            await eventually(
                lambda: sql("SELECT pg_notify('scheduler_cancel', %s)", (str(second),)) and second in stopped,
                what="a notification on the new connection",
            )
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            await listener.close()


class TestClaimAtAGivenNow:
    """The claim decides what is due by the now it is given, and records its runs at that now."""

    async def test_a_slot_is_claimed_only_once_its_time_has_come(self, runner_parts, client, sql):
        job_id = await make_job(client, schedule="@every 1s", start_at=None, overlap="allow")
        sql("UPDATE jobs SET next_run_at = %s, anchor_at = %s WHERE id = %s", (SLOT, SLOT, job_id))
        runner = runner_parts.runner

        before = await runner.claim_due_once(now=SLOT - timedelta(milliseconds=1))
        assert before.jobs == 0
        at = await runner.claim_due_once(now=SLOT + timedelta(milliseconds=200))

        assert at.jobs == 1
        assert at.fired == {("schedule", "started"): 1}
        assert at.lateness_s == [0.2]
        rows = sql(
            "SELECT scheduled_for, status, started_at, finished_at FROM runs WHERE job_id = %s", (job_id,)
        )
        assert rows == [
            (SLOT, "succeeded", SLOT + timedelta(milliseconds=200), SLOT + timedelta(milliseconds=200))
        ]
        assert sql("SELECT next_run_at FROM jobs WHERE id = %s", (job_id,))[0][0] == SLOT + timedelta(
            seconds=1
        )

    async def test_a_claim_past_the_grace_catches_up_once_and_fires_the_slots_still_inside_it(
        self, runner_parts, client, sql
    ):
        job_id = await make_job(
            client,
            schedule="@every 1s",
            start_at=None,
            overlap="allow",
            misfire={"policy": "once", "grace_s": 2},
        )
        sql("UPDATE jobs SET next_run_at = %s, anchor_at = %s WHERE id = %s", (SLOT, SLOT, job_id))

        counts = await runner_parts.runner.claim_due_once(now=SLOT + timedelta(hours=1, milliseconds=500))

        # 2.5 s late, the slot two seconds before the hour is the most recent one missed; the next
        # two are still inside the grace and fire as scheduled.
        assert counts.fired == {("catchup", "started"): 1, ("schedule", "started"): 2}
        # Done inside the claim, each of the three is timed (at 0 s) and counted.
        registry = runner_parts.runner.metrics.registry
        assert registry.get_sample_value("scheduler_run_duration_seconds_count") == 3
        assert (
            registry.get_sample_value(
                "scheduler_runs_completed_total", {"namespace": "default", "status": "succeeded"}
            )
            == 3
        )
        end = SLOT + timedelta(hours=1)
        rows = sql("SELECT scheduled_for, trigger FROM runs WHERE job_id = %s ORDER BY 1", (job_id,))
        assert rows == [
            (end - timedelta(seconds=2), "catchup"),
            (end - timedelta(seconds=1), "schedule"),
            (end, "schedule"),
        ]
        assert sql("SELECT next_run_at FROM jobs WHERE id = %s", (job_id,))[0][0] == end + timedelta(
            seconds=1
        )

    async def test_a_pending_run_starts_once_it_is_available(self, runner_parts, client, sql):
        job_id = await make_job(client)
        available = SLOT + timedelta(seconds=10)
        async with runner_parts.runner.pool.connection() as conn:
            await store.run_record_many(
                conn,
                [
                    store.NewRun(
                        id=uuid7(SLOT),
                        job_id=job_id,
                        scheduled_for=SLOT,
                        trigger=RunTrigger.RETRY,
                        attempt=2,
                        status=RunStatus.PENDING,
                        available_in_s=10,
                    )
                ],
                [store.Move(job_id=job_id, moves=False)],
                runner="test",
                lease_s=30,
                now=SLOT,
            )
        runner = runner_parts.runner

        assert (await runner.claim_pending_once(now=available - timedelta(milliseconds=1))).jobs == 0
        started = await runner.claim_pending_once(now=available)

        assert started.fired == {("retry", "started"): 1}
        # Started at the claim's now and logged at once; the outcome waits for the completer.
        assert sql("SELECT status, started_at, runner FROM runs WHERE job_id = %s", (job_id,)) == [
            ("running", available, runner.name)
        ]
        assert await runner_parts.completer.flush() == 1
        assert sql("SELECT status, attempt FROM runs WHERE job_id = %s", (job_id,)) == [("succeeded", 2)]
        assert active_runs(sql, job_id) == 0
