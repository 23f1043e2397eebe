"""Misfire and overlap policies as pure functions of the job and `now` (no clock is faked)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.domain.misfire import MAX_CATCHUP, Fire, SlotPlan, plan
from scheduler.domain.models import Misfire, MisfirePolicy, OverlapPolicy, RunStatus, RunTrigger
from scheduler.domain.overlap import Decision, decide, recorded_as
from scheduler.domain.schedule import Timing

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVERY_SECOND = Timing("@every 1s", "UTC", T0)


def catchups(result: SlotPlan) -> list[Fire]:
    return [f for f in result.fires if f.trigger is RunTrigger.CATCHUP]


def misfire(policy: str, grace_s: int = 5, window_s: int = 3600) -> Misfire:
    return Misfire(policy=MisfirePolicy(policy), grace_s=grace_s, window_s=window_s)


class TestMisfire:
    """Slots claimed within the grace fire normally; missed slots follow the policy."""

    def test_a_slot_claimed_within_the_grace_fires_normally(self):
        result = plan(EVERY_SECOND, misfire("skip"), T0 + timedelta(seconds=10), T0 + timedelta(seconds=14))
        assert [(f.slot, f.trigger) for f in result.fires] == [
            (T0 + timedelta(seconds=10), RunTrigger.SCHEDULE)
        ]
        assert result.next_run_at == T0 + timedelta(seconds=11)

    def test_skip_fires_no_missed_slot_and_the_due_slots_within_the_grace_normally(self):
        now = T0 + timedelta(seconds=100)
        result = plan(EVERY_SECOND, misfire("skip"), T0 + timedelta(seconds=1), now)
        assert [(f.slot, f.trigger) for f in result.fires] == [
            (now - timedelta(seconds=s), RunTrigger.SCHEDULE) for s in range(5, -1, -1)
        ]
        assert result.next_run_at == now + timedelta(seconds=1)

    @pytest.mark.parametrize("policy", list(MisfirePolicy))
    def test_a_caught_up_job_is_back_on_schedule_whatever_the_next_claim_waits(self, policy):
        # Resuming at the first slot not yet missed would leave the job at the edge of its grace:
        # a claim a moment later would find that slot missed and catch the job up again.
        now = T0 + timedelta(seconds=100)
        result = plan(EVERY_SECOND, misfire(policy), T0 + timedelta(seconds=1), now)
        assert result.next_run_at == now + timedelta(seconds=1)  # the first slot after now
        assert (
            sum(f.trigger is RunTrigger.CATCHUP for f in result.fires)
            == {"skip": 0, "once": 1, "all": 94}[policy]
        )

    def test_the_fires_within_a_long_grace_come_a_hundred_per_claim(self):
        now = T0 + timedelta(hours=1)
        result = plan(EVERY_SECOND, misfire("skip", grace_s=3000), T0, now)
        assert [f.slot for f in result.fires] == [
            now - timedelta(seconds=3000 - s) for s in range(MAX_CATCHUP)
        ]
        assert result.next_run_at == now - timedelta(seconds=3000 - MAX_CATCHUP)

    def test_once_fires_the_most_recent_missed_slot(self):
        now = T0 + timedelta(seconds=100)
        result = plan(EVERY_SECOND, misfire("once"), T0 + timedelta(seconds=1), now)
        assert [(f.slot, f.trigger) for f in result.fires if f.trigger is RunTrigger.CATCHUP] == [
            (now - timedelta(seconds=6), RunTrigger.CATCHUP)
        ]

    def test_all_fires_every_missed_slot_up_to_a_hundred(self):
        now = T0 + timedelta(seconds=30)
        result = plan(EVERY_SECOND, misfire("all"), T0 + timedelta(seconds=1), now)
        assert [f.slot for f in catchups(result)] == [T0 + timedelta(seconds=s) for s in range(1, 25)]
        long_outage = plan(EVERY_SECOND, misfire("all"), T0 + timedelta(seconds=1), T0 + timedelta(hours=2))
        assert len(catchups(long_outage)) == MAX_CATCHUP
        assert catchups(long_outage)[-1].slot == T0 + timedelta(hours=2, seconds=-6)

    def test_slots_older_than_the_window_never_fire(self):
        now = T0 + timedelta(hours=3)
        result = plan(EVERY_SECOND, misfire("once", window_s=60), T0 + timedelta(seconds=1), now)
        assert all(now - f.slot <= timedelta(seconds=60) for f in result.fires)
        assert len(catchups(result)) == 1
        stale = plan(Timing("0 0 * * *", "UTC", T0), misfire("once", window_s=60), T0, now)
        assert stale.fires == []
        assert stale.next_run_at == T0 + timedelta(days=1)


class TestOverlap:
    """A fire with unfinished runs: start, skip, queue (one waiting at most) or replace."""

    @pytest.mark.parametrize("policy", list(OverlapPolicy))
    def test_an_idle_job_always_starts(self, policy):
        assert decide(policy, active_runs=0, has_queued=False) == [Decision.START]

    def test_a_busy_job_follows_its_policy(self):
        assert decide(OverlapPolicy.ALLOW, active_runs=1, has_queued=False) == [Decision.START]
        assert decide(OverlapPolicy.SKIP, active_runs=1, has_queued=False) == [Decision.SKIP]
        assert decide(OverlapPolicy.QUEUE, active_runs=1, has_queued=False) == [Decision.QUEUE]
        assert decide(OverlapPolicy.QUEUE, active_runs=2, has_queued=True) == [Decision.SKIP]
        assert decide(OverlapPolicy.REPLACE, active_runs=1, has_queued=False) == [Decision.REPLACE]


class TestOverlapWithinOneClaim:
    """Several fires of one claim (a catch-up, the slots inside the grace) obey the policy among them."""

    def test_skip_starts_the_oldest_and_skips_the_rest(self):
        assert decide(OverlapPolicy.SKIP, active_runs=0, has_queued=False, fires=3) == [
            Decision.START,
            Decision.SKIP,
            Decision.SKIP,
        ]

    def test_queue_starts_one_and_queues_one(self):
        assert decide(OverlapPolicy.QUEUE, active_runs=0, has_queued=False, fires=3) == [
            Decision.START,
            Decision.QUEUE,
            Decision.SKIP,
        ]
        assert decide(OverlapPolicy.QUEUE, active_runs=1, has_queued=False, fires=2) == [
            Decision.QUEUE,
            Decision.SKIP,
        ]

    def test_replace_keeps_the_newest(self):
        assert decide(OverlapPolicy.REPLACE, active_runs=1, has_queued=False, fires=3) == [
            Decision.SKIP,
            Decision.SKIP,
            Decision.REPLACE,
        ]

    def test_allow_and_actions_that_finish_inside_the_claim_run_every_fire(self):
        assert decide(OverlapPolicy.ALLOW, active_runs=2, has_queued=False, fires=3) == [Decision.START] * 3
        assert (
            decide(OverlapPolicy.SKIP, active_runs=0, has_queued=False, fires=3, finishes_at_once=True)
            == [Decision.START] * 3
        )


class TestWhatADecisionRecords:
    """A skipped fire carries the reason, a queued one waits, a started one is what the caller starts."""

    @pytest.mark.parametrize("started", [RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.PENDING])
    def test_a_started_or_replacing_fire_is_recorded_as_the_caller_starts_it(self, started):
        for decision in (Decision.START, Decision.REPLACE):
            assert recorded_as(decision, OverlapPolicy.REPLACE, started=started) == (started, False, None)

    def test_a_skipped_fire_names_the_policy_and_a_queued_one_waits(self):
        assert recorded_as(Decision.SKIP, OverlapPolicy.QUEUE, started=RunStatus.RUNNING) == (
            RunStatus.SKIPPED,
            False,
            "skipped: the previous run was still running (overlap policy queue)",
        )
        assert recorded_as(Decision.QUEUE, OverlapPolicy.QUEUE, started=RunStatus.RUNNING) == (
            RunStatus.PENDING,
            True,
            None,
        )
