"""The runner's promises under crashes, pauses, lost connections and downtime (SPEC 3.3 and 4).

Real runner processes, real PostgreSQL, real HTTP receivers; time is never faked. Where a test needs
the past (an outage), it writes the state the past left rather than waiting it out.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
import signal
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from scheduler.domain.webhooks import message_id
from scheduler.ids import uuid7
from tests.conftest import Proc, Receiver, eventually
from tests.seed import seed_jobs

pytestmark = pytest.mark.slow

FAST_RETRY = {"max_attempts": 3, "min_backoff_s": 0, "max_backoff_s": 0}
COLUMNS = (
    "id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at, http_status, error"
)


def runs(sql, job_id: str | None = None) -> list[dict[str, Any]]:
    names = [c.strip() for c in COLUMNS.split(",")]
    where, params = ("WHERE job_id = %s", (job_id,)) if job_id else ("", None)
    rows = sql(f"SELECT {COLUMNS} FROM runs {where} ORDER BY scheduled_for, attempt", params)  # noqa: S608
    return [dict(zip(names, row, strict=True)) for row in rows]


def soon(seconds: float = 1.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def http(receiver: Receiver, path: str = "/hook") -> dict[str, Any]:
    return {"type": "http", "url": receiver.url + path}


async def make_job(client, **body: Any) -> dict[str, Any]:
    body.setdefault("action", {"type": "log", "payload": {}})
    response = await client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def log_events(proc: Proc, event: str) -> list[dict[str, Any]]:
    found = []
    for line in proc.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            found.append(record)
    return found


def stamp(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["timestamp"])


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals [start, end) open at one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in edges:
        current += step
        best = max(best, current)
    return best


def executing(rows: list[dict[str, Any]]) -> list[tuple[datetime, datetime]]:
    now = datetime.now(UTC)
    return [
        (row["started_at"], row["finished_at"] or now)
        for row in rows
        if row["started_at"] is not None and row["status"] != "skipped"
    ]


class TestRescue:
    """A runner that dies or freezes mid-call loses nothing: its run is rescued and delivered again."""

    async def test_killed_runner_mid_call_is_rescued_and_the_slot_delivered_again(
        self, client, procs, sql, receiver
    ):
        receiver.delay_s = 60
        victim = procs.runner(lease_s=2)
        job = await make_job(
            client,
            name="slow",
            schedule=f"@at {soon()}",
            action=http(receiver),
            timeout_s=120,
            retry=FAST_RETRY,
        )
        await eventually(lambda: receiver.count() == 1, what="the first call")
        receiver.delay_s = 0
        victim.popen.kill()
        victim.popen.wait()
        killed_at = datetime.now(UTC)
        procs.runner(lease_s=2)
        await eventually(lambda: receiver.count() >= 2, timeout=30, what="the redelivery")
        first, second = receiver.snapshot()[:2]
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        await eventually(
            lambda: any(r["status"] == "succeeded" for r in runs(sql, job["id"])), what="success"
        )
        lost, retried = runs(sql, job["id"])
        assert (lost["attempt"], lost["status"]) == (1, "lost")
        assert "lease expired" in lost["error"]
        assert (retried["attempt"], retried["trigger"], retried["status"]) == (2, "retry", "succeeded")
        assert retried["scheduled_for"] == lost["scheduled_for"]
        # Rescued within lease + sweep (2 s + under 1 s), with room for a loaded machine.
        assert lost["finished_at"] - killed_at < timedelta(seconds=10)

    async def test_a_frozen_runner_cannot_overwrite_the_outcome_of_its_rescuer(
        self, client, procs, sql, receiver
    ):
        receiver.delay_s = 4
        first_runner = procs.runner(lease_s=2)
        job = await make_job(
            client,
            name="zombie",
            schedule=f"@at {soon()}",
            action=http(receiver),
            timeout_s=60,
            retry=FAST_RETRY,
        )
        await eventually(lambda: receiver.count() == 1, what="the first call")
        first_runner.signal(signal.SIGSTOP)
        receiver.delay_s = 0
        try:
            procs.runner(lease_s=2)
            await eventually(
                lambda: [r["status"] for r in runs(sql, job["id"])] == ["lost", "succeeded"],
                timeout=30,
                what="the rescue and the retry",
            )
        finally:
            first_runner.signal(signal.SIGCONT)

        # The zombie wakes with its call answered; it must learn it lost the run and write nothing.
        # Its last word on the run is a completion the database refused, or a lost lease and the end
        # of the call it stopped for it (a stopped call writes no outcome): after either, nothing
        # more can land. A write that was wrongly accepted ends the wait too, and fails below.
        def zombie_done() -> bool:
            if log_events(first_runner, "run_completion_refused"):
                return True
            stopped = [r for r in log_events(first_runner, "run_stopped") if r["reason"] == "lease_lost"]
            return bool(stopped and log_events(first_runner, "run_lease_lost"))

        await eventually(
            lambda: zombie_done() or [r["status"] for r in runs(sql, job["id"])] != ["lost", "succeeded"],
            what="the zombie's refused completion, or its lost lease and stopped call",
        )
        lost, retried = runs(sql, job["id"])
        assert lost["status"] == "lost"
        assert "lease expired" in lost["error"]
        assert retried["status"] == "succeeded"
        assert retried["runner"] != lost["runner"]


class TestChaos:
    """Runners killed and restarted over and over: no slot lost, none recorded twice."""

    async def test_kill_and_restart_runners_for_a_minute(self, client, procs, sql, receiver):
        receiver.delay_s = 0.3
        jobs = 60
        duration_s = 60.0
        runners = [procs.runner(lease_s=2) for _ in range(4)]
        ids = []
        for i in range(jobs):
            job = await make_job(
                client,
                name=f"chaos-{i}",
                schedule="@every 1s",
                action=http(receiver, f"/c{i}"),
                overlap="allow",
                misfire={"policy": "all", "grace_s": 60},
                retry={"max_attempts": 5, "min_backoff_s": 0, "max_backoff_s": 1},
            )
            ids.append(job["id"])
        start = datetime.now(UTC) + timedelta(seconds=2)
        kills: dict[str, datetime] = {}
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            # Pacing, not waiting: kills land at random moments of the runners' cycles, 2-4 s apart.
            await asyncio.sleep(random.uniform(2.0, 4.0))
            index = random.randrange(len(runners))
            victim = runners[index]
            victim.popen.kill()
            victim.popen.wait()
            kills[victim.name] = datetime.now(UTC)
            runners[index] = procs.runner(lease_s=2)
        end = datetime.now(UTC) - timedelta(seconds=2)

        def settled() -> bool:
            unfinished = sql(
                "SELECT count(*) FROM runs WHERE status IN ('pending', 'running') AND scheduled_for <= %s",
                (end,),
            )[0][0]
            return unfinished == 0

        await eventually(settled, timeout=60, what="every run in the window to finish")
        # The calls first, then the rows: a call is made only once its run is recorded.
        delivered = Counter(call.headers["webhook-id"] for call in receiver.snapshot())
        everything = runs(sql)
        attempts_of: dict[str, list[dict[str, Any]]] = {}
        for row in everything:
            attempts_of.setdefault(message_id(row["job_id"], row["scheduled_for"]), []).append(row)
        rows = [r for r in everything if start <= r["scheduled_for"] <= end]
        by_slot: dict[tuple[str, datetime], list[dict[str, Any]]] = {}
        for row in rows:
            by_slot.setdefault((str(row["job_id"]), row["scheduled_for"]), []).append(row)
        expected_slots = {(job_id, slot) for job_id in ids for slot in seconds_between(start, end)}
        # A runner that was not killed can still lose a lease on a loaded machine; it logs it when so.
        lease_lost = {
            str(record["run_id"])
            for proc in procs.started
            if proc.name not in kills
            for event in ("run_lease_lost", "run_completion_refused")
            for record in log_events(proc, event)
        }

        def rescued_mid_call(row: dict[str, Any]) -> bool:
            """Ended as lost by another runner because its own died or lost its lease (SPEC 4)."""
            return row["status"] == "lost" and (row["runner"] in kills or str(row["id"]) in lease_lost)

        def unanswered(row: dict[str, Any]) -> bool:
            """Failed or timed out with no answer seen, so retried (SPEC 3.3) however far its call got."""
            return row["status"] in ("failed", "timed_out") and row["http_status"] is None

        duplicates = sum(count - 1 for count in delivered.values())
        lost_rows = [r for r in rows if r["status"] == "lost"]
        rescue_s = sorted(
            (r["finished_at"] - kills[r["runner"]]).total_seconds() for r in lost_rows if r["runner"] in kills
        )
        report = {
            "kills": len(kills),
            "slots": len(expected_slots),
            "lost_attempts_rescued": len(lost_rows),
            "lost_by_live_runners": sum(r["runner"] not in kills for r in lost_rows),
            "unanswered_attempts": sum(unanswered(r) for r in rows),
            "duplicate_deliveries": duplicates,
            "redelivered_slots": sum(count > 1 for count in delivered.values()),
            "rescue_p50_s": statistics.median(rescue_s) if rescue_s else None,
            "rescue_p99_s": rescue_s[min(len(rescue_s) - 1, int(len(rescue_s) * 0.99))] if rescue_s else None,
        }
        print(f"\nchaos: {json.dumps(report)}")

        missing = expected_slots - set(by_slot)
        assert not missing, f"{len(missing)} slots lost, e.g. {sorted(missing)[:3]}"
        for attempts in by_slot.values():
            numbers = sorted(r["attempt"] for r in attempts)
            assert numbers == list(range(1, len(numbers) + 1))  # one row per attempt, no gaps
            assert max(attempts, key=lambda r: r["attempt"])["status"] == "succeeded"
        assert set(delivered) <= set(attempts_of), "a call was made for a slot that has no run"
        undelivered = [slot for slot in expected_slots if not delivered[message_id(UUID(slot[0]), slot[1])]]
        assert not undelivered, f"{len(undelivered)} slots succeeded with no call, e.g. {undelivered[:3]}"
        # At least once, and again only when an earlier attempt of the slot was rescued mid-call (or,
        # which the receiver's prompt 200 should rule out, never saw its answer): each call of a slot
        # after its first needs its own such attempt, and no attempt calls twice.
        for msg_id, attempts in attempts_of.items():
            if attempts[0]["scheduled_for"] > end:
                continue  # its attempts may not be over yet
            last = max(r["attempt"] for r in attempts)
            excused = [r for r in attempts if r["attempt"] < last and (rescued_mid_call(r) or unanswered(r))]
            calls = delivered[msg_id]
            assert calls <= len(attempts), f"{msg_id}: {calls} calls, {len(attempts)} attempts: {attempts}"
            assert calls - 1 <= len(excused), f"{msg_id}: {calls} calls, {len(excused)} excused: {attempts}"


def seconds_between(start: datetime, end: datetime) -> list[datetime]:
    """Whole-second slots in [start, end]."""
    first = start.replace(microsecond=0) + (timedelta(seconds=1) if start.microsecond else timedelta(0))
    return [first + timedelta(seconds=i) for i in range(int((end - first).total_seconds()) + 1)]


class TestDatabaseTrouble:
    """Connections killed under load: the runner reconnects and loses no slot."""

    async def test_terminated_connections_are_replaced_without_losing_slots(self, client, procs, sql):
        runner = procs.runner(lease_s=5)
        ids = [
            (
                await make_job(
                    client,
                    name=f"db-{i}",
                    schedule="@every 1s",
                    overlap="allow",
                    misfire={"policy": "all", "grace_s": 60},
                )
            )["id"]
            for i in range(20)
        ]
        await eventually(lambda: log_events(runner, "runner_started"), what="runner start")
        start = datetime.now(UTC) + timedelta(seconds=1)

        def fired_after(moment: datetime) -> bool:
            return sql("SELECT count(*) FROM runs WHERE started_at > %s", (moment,))[0][0] > 0

        last_cut = start
        for _ in range(3):
            # Each cut meets a runner that came back from the one before: it has fired since.
            await eventually(functools.partial(fired_after, last_cut), what="a fire since the last cut")
            killed = sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE 'scheduler-runner%%' AND datname = current_database()"
            )
            assert killed
            last_cut = sql("SELECT clock_timestamp()")[0][0]
        await eventually(functools.partial(fired_after, last_cut), what="a fire after the last cut")
        end = datetime.now(UTC)
        expected = {(job_id, slot) for job_id in ids for slot in seconds_between(start, end)}

        def recorded() -> set[tuple[str, datetime]]:
            return {
                (str(r["job_id"]), r["scheduled_for"])
                for r in runs(sql)
                if start <= r["scheduled_for"] <= end
            }

        await eventually(lambda: expected <= recorded(), timeout=30, what="every slot of the window")
        assert runner.popen.poll() is None, runner.output()[-2000:]
        assert log_events(runner, "database_unavailable")


OUTAGE_S = 20
GRACE_S = 2
# A run a runner recorded before the outage, for the history the outage breaks off.
FIRED_BEFORE = """
INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
                  duration_ms)
VALUES (%(id)s, %(job_id)s, %(slot)s, 'schedule', 1, 'succeeded', 'runner-before-the-outage', %(slot)s,
        %(slot)s, 0)
"""
# The job as the outage left it: anchored three slots before it, its first two fired, its third
# (the outage's first) due ever since and never claimed.
LEFT_BY_THE_OUTAGE = """
UPDATE jobs SET anchor_at = %(anchor)s, next_run_at = %(down_at)s, last_run_id = %(last_id)s,
                last_run_status = 'succeeded', last_run_scheduled_for = %(last_slot)s,
                last_run_finished_at = %(last_slot)s
WHERE id = %(job_id)s
"""


class TestMisfire:
    """After downtime, skip fires no missed slot, once fires one, all fires each (up to 100)."""

    async def test_downtime_under_each_policy(self, client, procs, sql):
        jobs = {
            policy: (
                await make_job(
                    client,
                    name=f"misfire-{policy}",
                    schedule="@every 1s",
                    overlap="allow",
                    misfire={"policy": policy, "grace_s": GRACE_S, "window_s": 3600},
                )
            )["id"]
            for policy in ("skip", "once", "all")
        }
        # No runner is up. The database clock decides what is due, so the state OUTAGE_S seconds of
        # downtime leave is written rather than waited for: the outage began OUTAGE_S ago.
        down_at = sql("SELECT date_trunc('second', now()) - make_interval(secs => %s)", (OUTAGE_S,))[0][0]
        anchor = down_at - timedelta(seconds=3)
        before = [anchor + timedelta(seconds=1), anchor + timedelta(seconds=2)]
        for job_id in jobs.values():
            ids = [uuid7(slot) for slot in before]
            for run_id, slot in zip(ids, before, strict=True):
                sql(FIRED_BEFORE, {"id": run_id, "job_id": job_id, "slot": slot})
            sql(
                LEFT_BY_THE_OUTAGE,
                {
                    "job_id": job_id,
                    "anchor": anchor,
                    "down_at": down_at,
                    "last_id": ids[-1],
                    "last_slot": before[-1],
                },
            )
        procs.runner()

        def back_on_schedule(job_id: str) -> bool:
            """Two slots fired by claims after the one that found the job behind."""
            after = [r for r in runs(sql, job_id) if r["scheduled_for"] >= down_at]
            if not after:
                return False
            caught_up_at = min(r["started_at"] for r in after)
            return sum(r["scheduled_for"] > caught_up_at for r in after) >= 2

        await eventually(
            lambda: all(back_on_schedule(j) for j in jobs.values()),
            what="each job back on schedule after the outage",
        )
        state = {policy: runs(sql, j) for policy, j in jobs.items()}
        assert all(r["status"] == "succeeded" for rows in state.values() for r in rows)
        catchup = {policy: [r for r in rows if r["trigger"] == "catchup"] for policy, rows in state.items()}
        # Missed means older than the grace when claimed; a claim's time is its runs' started_at (the
        # database clock of the claim transaction), whenever the runner got to its first claim.
        grace = timedelta(seconds=GRACE_S)
        second = timedelta(seconds=1)

        def after_the_outage(policy: str) -> list[datetime]:
            return [r["scheduled_for"] for r in state[policy] if r["scheduled_for"] >= down_at]

        def contiguous(slots: list[datetime]) -> bool:
            return all(b - a == second for a, b in itertools.pairwise(slots))

        # skip: none of the missed slots, and on schedule again from the first slot not yet missed.
        assert catchup["skip"] == []
        skip_slots = [r["scheduled_for"] for r in state["skip"]]
        gaps = [(a, b) for a, b in itertools.pairwise(skip_slots) if b - a != second]
        assert len(gaps) == 1, gaps  # the outage, skipped
        assert gaps[0][0] == before[-1]
        first_claim = next(r for r in state["skip"] if r["scheduled_for"] == gaps[0][1])
        assert gaps[0][1] >= first_claim["started_at"] - grace  # not a missed slot
        assert gaps[0][1] - second < first_claim["started_at"] - grace  # and the first one not missed

        # once: one fire, for the most recent missed slot, then on schedule from the slot after it.
        assert len(catchup["once"]) == 1, [(r["scheduled_for"], r["started_at"]) for r in catchup["once"]]
        once = catchup["once"][0]
        assert once["scheduled_for"] < once["started_at"] - grace  # missed ...
        assert once["scheduled_for"] + second >= once["started_at"] - grace  # ... and the latest missed
        once_slots = after_the_outage("once")
        assert once_slots[0] == once["scheduled_for"]
        assert contiguous(once_slots)

        # all: every missed slot, from the outage's first, with no gap anywhere in the history.
        missed = [r["scheduled_for"] for r in catchup["all"]]
        assert missed[0] == down_at
        assert contiguous(missed)
        assert missed[-1] < catchup["all"][-1]["started_at"] - grace
        assert missed[-1] + second >= catchup["all"][-1]["started_at"] - grace
        assert OUTAGE_S - GRACE_S <= len(missed) <= 100
        all_slots = [r["scheduled_for"] for r in state["all"]]
        assert all_slots[:2] == before
        assert contiguous(all_slots), "a gap in 'all'"


class TestOverlap:
    """A fire while the previous run still runs: skip, queue, replace or allow."""

    async def test_each_policy_with_a_slow_target(self, client, procs, sql, receiver):
        receiver.delay_s = 2.5
        jobs = {
            policy: (
                await make_job(
                    client,
                    name=f"overlap-{policy}",
                    schedule="@every 1s",
                    action=http(receiver, f"/{policy}"),
                    overlap=policy,
                    timeout_s=30,
                    retry={"max_attempts": 1},
                )
            )["id"]
            for policy in ("skip", "queue", "replace", "allow")
        }
        procs.runner()

        def count(rows: list[dict[str, Any]], status: str) -> int:
            return sum(r["status"] == status for r in rows)

        def seen_enough() -> dict[str, list[dict[str, Any]]] | None:
            """Each policy's history once it holds the fires the assertions below are about."""
            state = {policy: runs(sql, job_id) for policy, job_id in jobs.items()}
            enough = (
                count(state["skip"], "skipped") >= 3
                and count(state["queue"], "skipped") >= 2
                and count(state["replace"], "cancelled") >= 3
                and max_overlap(executing(state["allow"])) >= 2
            )
            return state if enough else None

        state = await eventually(
            seen_enough,
            timeout=40,
            what="3 skipped (skip), 2 skipped (queue), 3 replaced (replace) and 2 at once (allow)",
        )

        skip = state["skip"]
        assert max_overlap(executing(skip)) == 1
        assert all("overlap" in r["error"] for r in skip if r["status"] == "skipped")

        queue = state["queue"]
        assert max_overlap(executing(queue)) == 1
        assert count(queue, "pending") <= 1

        replace = state["replace"]
        assert max_overlap(executing(replace)) == 1
        assert all("replaced" in r["error"] for r in replace if r["status"] == "cancelled")

    async def test_manual_trigger_obeys_the_overlap_policy(self, client, procs, receiver):
        receiver.delay_s = 5
        job = await make_job(
            client,
            name="manual",
            schedule=f"@at {soon(0.5)}",
            action=http(receiver),
            overlap="skip",
            timeout_s=30,
        )
        procs.runner()
        await eventually(lambda: receiver.count() == 1, what="the scheduled call")
        response = await client.post(f"/jobs/{job['id']}/trigger")
        assert response.status_code == 202
        assert (response.json()["trigger"], response.json()["status"]) == ("manual", "skipped")
        await client.patch(f"/jobs/{job['id']}", json={"overlap": "allow"})
        response = await client.post(f"/jobs/{job['id']}/trigger")
        assert (response.json()["trigger"], response.json()["status"]) == ("manual", "pending")
        await eventually(lambda: receiver.count() == 2, what="the manual call")


class TestRetriesAndCancel:
    """Retries wait within their backoff bounds; cancel stops a call at once; retry makes an attempt."""

    async def test_retry_delays_stay_within_the_backoff_bounds(self, client, procs, sql, receiver):
        receiver.status = 500
        job = await make_job(
            client,
            name="flaky",
            schedule=f"@at {soon()}",
            action=http(receiver),
            retry={"max_attempts": 4, "min_backoff_s": 1, "max_backoff_s": 2},
        )
        procs.runner()
        await eventually(
            lambda: [r["status"] for r in runs(sql, job["id"])] == ["failed"] * 4,
            timeout=30,
            what="four attempts",
        )
        attempts = runs(sql, job["id"])
        assert [r["attempt"] for r in attempts] == [1, 2, 3, 4]
        assert [r["trigger"] for r in attempts] == ["schedule", "retry", "retry", "retry"]
        for number, (before, after) in enumerate(itertools.pairwise(attempts), start=1):
            wait = (after["started_at"] - before["finished_at"]).total_seconds()
            cap = min(2, 1 * 2 ** (number - 1))
            assert wait >= 1 - 0.01, (number, wait)
            assert wait <= cap + 2, (number, wait)  # + the time a runner takes to pick it up

    async def test_cancel_stops_the_call_within_a_second(self, client, procs, sql, receiver):
        receiver.delay_s = 30
        runner = procs.runner()
        job = await make_job(
            client, name="long", schedule=f"@at {soon()}", action=http(receiver), timeout_s=120
        )
        await eventually(lambda: receiver.count() == 1, what="the call")
        run = runs(sql, job["id"])[0]
        asked = datetime.now(UTC)
        response = await client.post(f"/runs/{run['id']}/cancel")
        assert response.status_code == 202
        assert response.json()["status"] == "cancelled"
        stopped = await eventually(
            lambda: log_events(runner, "run_stopped"), what="the runner to stop the call"
        )
        assert stopped[0]["reason"] == "cancelled"
        assert stamp(stopped[0]) - asked < timedelta(seconds=1)
        assert (await client.post(f"/runs/{run['id']}/cancel")).status_code == 409
        assert runs(sql, job["id"])[0]["status"] == "cancelled"

    async def test_manual_retry_of_a_failed_run_makes_a_new_attempt(self, client, procs, sql, receiver):
        receiver.status = 500
        job = await make_job(
            client, name="once", schedule=f"@at {soon()}", action=http(receiver), retry={"max_attempts": 1}
        )
        procs.runner()
        await eventually(
            lambda: [r["status"] for r in runs(sql, job["id"])] == ["failed"], what="the failure"
        )
        failed = runs(sql, job["id"])[0]
        receiver.status = 200
        response = await client.post(f"/runs/{failed['id']}/retry")
        assert response.status_code == 202
        assert (response.json()["attempt"], response.json()["trigger"]) == (2, "retry")
        await eventually(
            lambda: [r["status"] for r in runs(sql, job["id"])] == ["failed", "succeeded"], what="the retry"
        )
        assert (await client.post(f"/runs/{failed['id']}/retry")).status_code == 409  # not the newest attempt
        newest = runs(sql, job["id"])[1]
        assert (await client.post(f"/runs/{newest['id']}/retry")).status_code == 409  # succeeded

    async def test_deleting_a_job_cancels_its_running_run(self, client, procs, sql, receiver):
        receiver.delay_s = 30
        runner = procs.runner()
        job = await make_job(
            client, name="doomed", schedule=f"@at {soon()}", action=http(receiver), timeout_s=120
        )
        await eventually(lambda: receiver.count() == 1, what="the call")
        assert (await client.delete(f"/jobs/{job['id']}")).status_code == 204
        assert runs(sql, job["id"])[0]["status"] == "cancelled"
        await eventually(lambda: log_events(runner, "run_stopped"), what="the runner to stop the call")


class TestShutdown:
    """SIGTERM drains in-flight runs; what cannot finish in the grace goes straight to another runner."""

    async def test_sigterm_lets_in_flight_calls_finish(self, client, procs, sql, receiver):
        receiver.delay_s = 2
        runner = procs.runner(shutdown_grace_s=20)
        ids = [
            (await make_job(client, name=f"drain-{i}", schedule=f"@at {soon()}", action=http(receiver)))["id"]
            for i in range(5)
        ]
        await eventually(lambda: receiver.count() == 5, what="five calls in flight")
        runner.signal(signal.SIGTERM)
        assert runner.popen.wait(timeout=20) == 0
        assert [runs(sql, job_id)[0]["status"] for job_id in ids] == ["succeeded"] * 5

    async def test_runs_left_at_the_end_of_the_grace_are_handed_back(self, client, procs, sql, receiver):
        receiver.delay_s = 8
        leaving = procs.runner(shutdown_grace_s=0.5)
        job = await make_job(
            client, name="handoff", schedule=f"@at {soon()}", action=http(receiver), timeout_s=60
        )
        await eventually(lambda: receiver.count() == 1, what="the call")
        receiver.delay_s = 0
        leaving.signal(signal.SIGTERM)
        assert leaving.popen.wait(timeout=20) == 0
        gone_at = datetime.now(UTC)
        assert runs(sql, job["id"])[0]["status"] == "pending"
        procs.runner()  # lease is 30 s: only a hand-back lets this one start the run at once
        await eventually(lambda: runs(sql, job["id"])[0]["status"] == "succeeded", what="the other runner")
        run = runs(sql, job["id"])[0]
        assert run["attempt"] == 1
        assert run["started_at"] - gone_at < timedelta(seconds=15)

    async def test_a_second_signal_exits_at_once(self, client, procs, receiver):
        receiver.delay_s = 30
        runner = procs.runner(shutdown_grace_s=60)
        await make_job(client, name="stuck", schedule=f"@at {soon()}", action=http(receiver), timeout_s=120)
        await eventually(lambda: receiver.count() == 1, what="the call")
        runner.signal(signal.SIGTERM)
        await eventually(lambda: log_events(runner, "runner_draining"), what="draining")
        runner.signal(signal.SIGTERM)
        assert runner.popen.wait(timeout=10) != 0


class TestDatabaseRestart:
    """PostgreSQL itself restarts under a runner: it logs it, backs off, reconnects, loses nothing."""

    async def test_runner_rides_out_a_postgres_restart(self, tmp_path):
        from scheduler.cli.embedded import start as start_embedded  # noqa: PLC0415
        from scheduler.cli.embedded import stop as stop_embedded  # noqa: PLC0415
        from scheduler.db.migrate import migrate  # noqa: PLC0415
        from tests.conftest import Procs  # noqa: PLC0415

        data = tmp_path / "pgdata"
        url, server = start_embedded(data)
        procs = Procs(url, tmp_path)
        try:
            migrate(url)
            with psycopg.connect(url, autocommit=True) as conn:
                anchor = datetime.now(UTC).replace(microsecond=0)
                seed_jobs(
                    conn,
                    20,
                    prefix="restart-",
                    schedule="@every 1s",
                    anchor_at=anchor,
                    next_run_at=anchor + timedelta(seconds=1),
                    action={"type": "log", "payload": {}},
                    retry_max_attempts=3,
                    misfire_policy="all",
                    misfire_grace_s=3600,
                    overlap="allow",
                )
                ids = {str(row[0]) for row in conn.execute(b"SELECT id FROM jobs").fetchall()}

            def recorded(low: datetime, high: datetime) -> set[tuple[str, datetime]]:
                with psycopg.connect(url, autocommit=True) as conn:
                    rows = conn.execute(
                        b"SELECT job_id, scheduled_for FROM runs WHERE scheduled_for BETWEEN %s AND %s",
                        (low, high),
                    ).fetchall()
                return {(str(job), slot) for job, slot in rows}

            def every_job_fired_from(moment: datetime) -> bool:
                return {job for job, _ in recorded(moment, moment + timedelta(days=1))} == ids

            def claim_failures() -> list[dict[str, Any]]:
                events = log_events(runner, "database_unavailable")
                return [e for e in events if e["service"] == "claim"]

            def accepting() -> datetime | None:
                try:
                    with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
                        return conn.execute(b"SELECT now()").fetchall()[0][0]
                except psycopg.OperationalError:
                    return None

            runner = procs.runner(lease_s=5)
            await eventually(lambda: log_events(runner, "runner_started"), what="runner start")
            start = datetime.now(UTC) + timedelta(seconds=1)
            await eventually(lambda: every_job_fired_from(start), what="a run of every job before the stop")
            stop_embedded(server)
            # A slot comes due while the server is down, and the runner fails to claim it twice.
            slot_in_downtime = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
            await eventually(
                lambda: sum(stamp(e) > slot_in_downtime for e in claim_failures()) >= 2,
                what="the runner to fail two claims after a slot of the downtime",
            )
            # It backs off: 0.1 s, then 0.2 s (doubling to 1 s, so it claims within 2 s of a restart).
            assert [e["retry_in_s"] for e in claim_failures()[:2]] == [0.1, 0.2]
            url_again, server = start_embedded(data)
            assert url_again == url
            back_at = await eventually(accepting, what="the server to accept connections again")
            await eventually(
                lambda: every_job_fired_from(back_at), what="a run of every job after the restart"
            )
            expected = {(job, slot) for job in ids for slot in seconds_between(start, back_at)}
            await eventually(
                lambda: expected <= recorded(start, back_at),
                timeout=30,
                what="every slot, the downtime's too",
            )
            assert runner.popen.poll() is None
            assert log_events(runner, "database_reconnected")
        finally:
            procs.stop_all()
            stop_embedded(server)
