"""Claiming ahead: an HTTP job may be claimed shortly before its slot, and its call still starts at it.

In-process against real PostgreSQL and a real local HTTP receiver. Claims are made at the database's
clock where the test watches a call arrive, and at a passed ``now`` where it only reads rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from scheduler.config import ConfigError
from scheduler.db import store
from scheduler.metrics import RunnerMetrics
from scheduler.runner.loop import Runner
from scheduler.runner.service import RunnerParts
from tests.conftest import Receiver, eventually, settings_for, start_run

SLOT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
AHEAD = timedelta(milliseconds=300)  # inside the default lookahead of 0.5 s


async def make_job(client: Any, name: str, action: dict[str, Any], **body: Any) -> UUID:
    """An every-second job; the test sets its next slot itself."""
    response = await client.post(
        "/jobs", json={"name": name, "schedule": "@every 1s", "action": action, "overlap": "allow"} | body
    )
    assert response.status_code == 201, response.text
    return UUID(response.json()["id"])


def http(receiver: Receiver) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "url": receiver.url + "/hook"}


def due_at(sql: Any, job_id: UUID, slot: datetime) -> None:
    sql("UPDATE jobs SET next_run_at = %s, anchor_at = %s WHERE id = %s", (slot, slot, job_id))


def runs_of(sql: Any, job_id: UUID) -> list[tuple[Any, ...]]:
    return sql(
        "SELECT scheduled_for, trigger, status, started_at, lease_expires_at, available_at FROM runs"
        " WHERE job_id = %s ORDER BY scheduled_for",
        (job_id,),
    )


def another_runner(parts: RunnerParts, **changes: Any) -> Runner:
    """A runner beside ``parts``' one, on the same pool and client, with settings changed."""
    runner = parts.runner
    return Runner(
        dataclasses.replace(runner.settings, **changes),
        runner.pool,
        runner.client,
        completer=parts.completer,
        signing=runner.signing,
        metrics=RunnerMetrics(),
    )


@pytest.fixture
async def runners(runner_parts: RunnerParts) -> AsyncIterator[list[Runner]]:
    """The test's runners (the first is ``runner_parts``'); held calls never start once it ends.

    Calls already started are let finish (the receiver answers at once): one cancelled while its
    task reads the namespace's signing secrets would leave a connection half used.
    """
    made = [runner_parts.runner]
    yield made
    for runner in made:
        for handle in runner._timers.values():
            handle.cancel()
        tasks = [entry.task for entry in runner._inflight.values() if entry.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
    await runner_parts.completer.flush()


class TestAJobClaimedAhead:
    """Its call waits in the runner until its slot, and its run says it started at the slot."""

    async def test_its_call_never_reaches_the_target_before_its_slot(
        self, runners: list[Runner], client: Any, sql: Any, receiver: Receiver
    ):
        job_id = await make_job(client, "ahead", http(receiver))
        sql("UPDATE jobs SET next_run_at = now() + interval '400 ms' WHERE id = %s", (job_id,))
        runner = runners[0]

        counts = await runner.claim_due_once()

        assert counts.jobs == 1
        assert counts.lateness_s == [0.0]
        ((slot, trigger, status, started_at, lease_expires_at, _),) = runs_of(sql, job_id)
        assert (trigger, status) == ("schedule", "running")
        assert started_at == slot  # not the claim's now, which came before the slot
        assert lease_expires_at == slot + timedelta(seconds=runner.settings.lease_s)
        # While it waits, it holds its concurrency slot and its lease is renewed with the others.
        assert runner._busy_slots == 1
        assert [lease.run_id for lease in runner.leases()] == list(runner._inflight)
        await eventually(receiver.count, timeout=5, what="the call")
        (arrived,) = receiver.snapshot()
        assert arrived.at >= slot.timestamp()
        await eventually(lambda: not runner._inflight, timeout=5, what="the call to end")
        await runner.completer.flush()
        ((_, _, status, started_at, _, _),) = runs_of(sql, job_id)
        assert status == "succeeded"
        # Its outcome moved started_at to when the call began: after the slot, before the arrival.
        assert slot <= started_at
        assert started_at.timestamp() <= arrived.at

    async def test_a_call_that_starts_late_on_a_busy_runner_says_so_in_its_started_at(
        self, runners: list[Runner], client: Any, sql: Any, receiver: Receiver
    ):
        job_id = await make_job(client, "busy", http(receiver))
        sql("UPDATE jobs SET next_run_at = now() + interval '300 ms' WHERE id = %s", (job_id,))
        runner = runners[0]
        await runner.claim_due_once()
        (entry,) = runner._inflight.values()
        loop = asyncio.get_running_loop()
        # Something else holds the event loop for 400 ms just before the slot's timer is due.
        loop.call_at(entry.work.planned_at - 0.05, time.sleep, 0.4)

        await eventually(receiver.count, timeout=5, what="the call")
        await eventually(lambda: not runner._inflight, timeout=5, what="the call to end")
        await runner.completer.flush()
        ((slot, _, status, started_at, _, _),) = runs_of(sql, job_id)
        assert status == "succeeded"
        assert started_at - slot >= timedelta(milliseconds=300)

    async def test_its_lease_is_renewed_while_it_waits_and_a_cancel_stops_it_before_its_call(
        self, runners: list[Runner], client: Any, sql: Any, receiver: Receiver
    ):
        job_id = await make_job(client, "cancelled", http(receiver))
        sql("UPDATE jobs SET next_run_at = now() + interval '450 ms' WHERE id = %s", (job_id,))
        runner = runners[0]
        await runner.claim_due_once()
        (run_id,) = runner._inflight

        assert [lease.run_id for lease in runner.leases()] == [run_id]
        assert runner.cancel(run_id)
        assert runner._busy_slots == 0
        assert runner.leases() == []
        assert not runner.cancel(run_id)  # nothing left to stop
        await asyncio.sleep(0.7)  # past the slot: the held call would have gone out by now
        assert receiver.count() == 0

    async def test_two_runners_claiming_ahead_at_once_record_each_slot_once_planned_at_its_slot(
        self, runners: list[Runner], runner_parts: RunnerParts, client: Any, sql: Any, receiver: Receiver
    ):
        jobs = [await make_job(client, f"job-{i}", http(receiver)) for i in range(40)]
        for job_id in jobs:
            due_at(sql, job_id, SLOT + AHEAD)
        runners.append(another_runner(runner_parts, claim_batch=25))
        first, second = runners

        counts = await asyncio.gather(first.claim_due_once(now=SLOT), second.claim_due_once(now=SLOT))

        assert sum(c.jobs for c in counts) == 40
        rows = sql("SELECT job_id, scheduled_for, trigger, status, started_at FROM runs")
        assert len(rows) == 40
        assert {row[0] for row in rows} == set(jobs)
        assert {row[1:] for row in rows} == {(SLOT + AHEAD, "schedule", "running", SLOT + AHEAD)}
        # Planned at its own slot: on time (lateness 0), one fire, and the job moves on one slot.
        assert all(c.lateness_s == [0.0] * c.jobs for c in counts)
        assert sql("SELECT DISTINCT next_run_at FROM jobs") == [(SLOT + AHEAD + timedelta(seconds=1),)]
        again = await first.claim_due_once(now=SLOT)
        assert again.jobs == 0


class TestWhatIsNeverClaimedAhead:
    """A log job, and a job whose overlap policy could decide otherwise at its slot, wait for it."""

    async def test_a_log_job_is_claimed_only_at_its_slot(self, runners: list[Runner], client: Any, sql: Any):
        job_id = await make_job(client, "log", {"type": "log"})
        due_at(sql, job_id, SLOT + AHEAD)
        runner = runners[0]

        assert (await runner.claim_due_once(now=SLOT)).jobs == 0
        assert (await runner.claim_due_once(now=SLOT + AHEAD)).jobs == 1
        assert runs_of(sql, job_id)[0][2:4] == ("succeeded", SLOT + AHEAD)

    async def test_an_overlap_skip_job_with_a_run_in_flight_waits_for_its_slot(
        self,
        runners: list[Runner],
        runner_parts: RunnerParts,
        client: Any,
        sql: Any,
        receiver: Receiver,
    ):
        skip = await make_job(client, "skip", http(receiver), overlap="skip")
        allow = await make_job(client, "allow", http(receiver), overlap="allow")
        for job_id in (skip, allow):
            due_at(sql, job_id, SLOT + AHEAD)
            await start_run(runner_parts, job_id, slot=SLOT - timedelta(seconds=1), lease_s=30, at=SLOT)
        runner = runners[0]

        ahead = await runner.claim_due_once(now=SLOT)

        # The run in flight could end before the slot: what `skip` makes of it is decided then.
        assert ahead.jobs == 1
        assert [row[0] for row in runs_of(sql, allow)] == [SLOT - timedelta(seconds=1), SLOT + AHEAD]
        assert [row[0] for row in runs_of(sql, skip)] == [SLOT - timedelta(seconds=1)]
        at_slot = await runner.claim_due_once(now=SLOT + AHEAD)
        assert at_slot.fired == {("schedule", "skipped"): 1}

    async def test_the_idle_runner_wakes_a_lookahead_early_only_for_a_job_it_may_claim_ahead(
        self, runners: list[Runner], client: Any, sql: Any, receiver: Receiver
    ):
        job_id = await make_job(client, "next", http(receiver))
        sql("UPDATE jobs SET next_run_at = now() + interval '10 s' WHERE id = %s", (job_id,))
        async with runners[0].pool.connection() as conn:
            ahead = await store.job_next_due(conn, lookahead_s=0.5)
            sql('UPDATE jobs SET action = \'{"type": "log"}\' WHERE id = %s', (job_id,))
            logged = await store.job_next_due(conn, lookahead_s=0.5)

        assert ahead.slot_in_s is not None
        assert logged.slot_in_s is not None
        assert 9.0 < ahead.slot_in_s < 9.5 < logged.slot_in_s <= 10.0


class TestAShutdownWithRunsWaiting:
    """A shutdown hands a run waiting for its slot back at once, and no runner starts it early."""

    async def test_the_run_goes_back_available_at_its_slot_and_its_call_never_leaves(
        self, runners: list[Runner], runner_parts: RunnerParts, client: Any, sql: Any, receiver: Receiver
    ):
        job_id = await make_job(client, "handed-back", http(receiver))
        sql("UPDATE jobs SET next_run_at = now() + interval '2 s' WHERE id = %s", (job_id,))
        runner = another_runner(runner_parts, claim_lookahead_s=3.0)
        runners.append(runner)
        assert (await runner.claim_due_once()).jobs == 1

        await runner._drain()

        ((slot, _, status, started_at, _, available_at),) = runs_of(sql, job_id)
        assert (status, started_at, available_at) == ("pending", None, slot)
        assert not runner._timers
        # Another runner looking for pending runs does not find it before its slot.
        assert (await runners[0].claim_pending_once()).jobs == 0
        assert receiver.count() == 0


class TestLookaheadZero:
    """With the lookahead off, only what is due is claimed, as before."""

    async def test_an_http_job_is_claimed_at_its_slot_and_starts_at_the_claim(
        self, runners: list[Runner], runner_parts: RunnerParts, client: Any, sql: Any, receiver: Receiver
    ):
        job_id = await make_job(client, "due", http(receiver))
        due_at(sql, job_id, SLOT + AHEAD)
        runner = another_runner(runner_parts, claim_lookahead_s=0.0)
        runners.append(runner)

        assert (await runner.claim_due_once(now=SLOT)).jobs == 0
        late = await runner.claim_due_once(now=SLOT + 2 * AHEAD)
        assert late.jobs == 1
        assert late.lateness_s == [pytest.approx(AHEAD.total_seconds())]
        assert runs_of(sql, job_id)[0][2:4] == ("running", SLOT + 2 * AHEAD)


class TestTheSetting:
    """SCHEDULER_CLAIM_LOOKAHEAD_S is bounded by the lease: a waiting run holds its lease."""

    def test_a_lookahead_past_a_tenth_of_the_lease_is_refused(self, db_url: str):
        assert settings_for(db_url).claim_lookahead_s == 0.5
        assert settings_for(db_url, claim_lookahead_s=0).claim_lookahead_s == 0.0
        assert settings_for(db_url, claim_lookahead_s=3, lease_s=30).claim_lookahead_s == 3.0
        with pytest.raises(ConfigError, match="SCHEDULER_CLAIM_LOOKAHEAD_S"):
            settings_for(db_url, claim_lookahead_s=2, lease_s=10)
        # Unset, the default is taken under a short lease, a tenth of it.
        short = settings_for(db_url, lease_s=2)
        assert short.claim_lookahead_s == 0.5
        unwired: Any = None  # a runner built to read its settings, never run
        runner = Runner(short, unwired, unwired, completer=unwired, signing=unwired, metrics=RunnerMetrics())
        assert runner._lookahead_s == 0.2
        with pytest.raises(ConfigError, match="SCHEDULER_CLAIM_LOOKAHEAD_S"):
            settings_for(db_url, claim_lookahead_s=-1)
