"""Misfire and overlap policies as pure functions of the job and `now` (no clock is faked)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.misfire import MAX_CATCHUP, plan
from scheduler.models import Misfire, MisfirePolicy, OverlapPolicy, RunTrigger
from scheduler.overlap import Decision, decide
from scheduler.schedule import Timing

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVERY_SECOND = Timing("@every 1s", "UTC", T0)


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

    def test_skip_fires_nothing_and_resumes_at_the_first_slot_not_missed(self):
        now = T0 + timedelta(seconds=100)
        result = plan(EVERY_SECOND, misfire("skip"), T0 + timedelta(seconds=1), now)
        assert result.fires == []
        assert result.next_run_at == now - timedelta(seconds=5)

    def test_once_fires_the_most_recent_missed_slot(self):
        now = T0 + timedelta(seconds=100)
        result = plan(EVERY_SECOND, misfire("once"), T0 + timedelta(seconds=1), now)
        assert [(f.slot, f.trigger) for f in result.fires] == [
            (now - timedelta(seconds=6), RunTrigger.CATCHUP)
        ]

    def test_all_fires_every_missed_slot_up_to_a_hundred(self):
        now = T0 + timedelta(seconds=30)
        result = plan(EVERY_SECOND, misfire("all"), T0 + timedelta(seconds=1), now)
        assert [f.slot for f in result.fires] == [T0 + timedelta(seconds=s) for s in range(1, 25)]
        long_outage = plan(EVERY_SECOND, misfire("all"), T0 + timedelta(seconds=1), T0 + timedelta(hours=2))
        assert len(long_outage.fires) == MAX_CATCHUP
        assert long_outage.fires[-1].slot == T0 + timedelta(hours=2, seconds=-6)

    def test_slots_older_than_the_window_never_fire(self):
        now = T0 + timedelta(hours=3)
        result = plan(EVERY_SECOND, misfire("once", window_s=60), T0 + timedelta(seconds=1), now)
        assert all(now - f.slot <= timedelta(seconds=60) for f in result.fires)
        stale = plan(Timing("0 0 * * *", "UTC", T0), misfire("once", window_s=60), T0, now)
        assert stale.fires == []
        assert stale.next_run_at == T0 + timedelta(days=1)


class TestOverlap:
    """A fire with unfinished runs: start, skip, queue (one waiting at most) or replace."""

    @pytest.mark.parametrize("policy", list(OverlapPolicy))
    def test_an_idle_job_always_starts(self, policy):
        assert decide(policy, active_runs=0, has_queued=False) is Decision.START

    def test_a_busy_job_follows_its_policy(self):
        assert decide(OverlapPolicy.ALLOW, active_runs=1, has_queued=False) is Decision.START
        assert decide(OverlapPolicy.SKIP, active_runs=1, has_queued=False) is Decision.SKIP
        assert decide(OverlapPolicy.QUEUE, active_runs=1, has_queued=False) is Decision.QUEUE
        assert decide(OverlapPolicy.QUEUE, active_runs=2, has_queued=True) is Decision.SKIP
        assert decide(OverlapPolicy.REPLACE, active_runs=1, has_queued=False) is Decision.REPLACE
