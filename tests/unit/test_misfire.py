"""The misfire plan, found backwards in constant time, is the plan stepping forward through the outage gives.

Issue 11: `misfire.plan` used to step through every slot of the outage; it now asks `prev_fire`
for the missed slots directly. Over random schedules, zones, slots and lags (up to two hours of an
every-second job), the fires and the next slot must be exactly what brute-force forward stepping
finds under SPEC 3.3.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.domain import schedule
from scheduler.domain.misfire import MAX_CATCHUP, plan
from scheduler.domain.models import Misfire, MisfirePolicy, RunTrigger
from scheduler.domain.schedule import Timing, next_fire

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
SCHEDULES = [
    "* * * * * *",
    "*/7 * * * * *",
    "* * * * *",
    "30 * * * *",
    "*/5 1-3 * * *",
    "@every 13s",
    "@every 1s",
]
ZONES = ["UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]
# Around New York's and Lord Howe's 2024 fall-backs, where an hour (or half hour) comes twice.
STARTS = [datetime(2024, 11, 3, 4, 30, tzinfo=UTC), datetime(2024, 4, 6, 13, 30, tzinfo=UTC), EPOCH]


def forward_plan(
    timing: Timing, rule: Misfire, slot: datetime, now: datetime
) -> tuple[list[datetime], list[datetime], datetime | None]:
    """SPEC 3.3 by brute force: step through every slot from `slot` on."""
    grace = timedelta(seconds=rule.grace_s)
    missed: list[datetime] = []
    moment: datetime | None = slot
    while moment is not None and moment < now - grace:
        missed.append(moment)
        moment = next_fire(timing, moment)
    in_window = [s for s in missed if s >= now - timedelta(seconds=rule.window_s)]
    on_time: list[datetime] = []
    while moment is not None and moment <= now and len(on_time) < MAX_CATCHUP:
        on_time.append(moment)
        moment = next_fire(timing, moment)
    if rule.policy is MisfirePolicy.SKIP:
        return [], on_time, moment
    if rule.policy is MisfirePolicy.ONCE:
        return in_window[-1:], on_time, moment
    return in_window[-MAX_CATCHUP:], on_time, moment


class TestPlanMatchesForwardStepping:
    """Missed slots found backwards are the ones forward stepping finds, for every policy."""

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        expression=st.sampled_from(SCHEDULES),
        zone=st.sampled_from(ZONES),
        start=st.sampled_from(STARTS),
        offset_s=st.integers(0, 3 * 3600),
        lag_s=st.integers(6, 2 * 3600),
        policy=st.sampled_from(list(MisfirePolicy)),
        window_s=st.sampled_from([60, 600, 3600, 7200]),
    )
    def test_fires_and_next_slot_match(self, expression, zone, start, offset_s, lag_s, policy, window_s):  # noqa: PLR0917 - hypothesis passes each drawn value
        timing = Timing(expression, zone, start)
        slot = next_fire(timing, start + timedelta(seconds=offset_s))
        assert slot is not None
        now = slot + timedelta(seconds=lag_s, microseconds=250_000)
        rule = Misfire(policy=policy, grace_s=5, window_s=window_s)
        result = plan(timing, rule, slot, now)
        missed, on_time, resume = forward_plan(timing, rule, slot, now)
        assert [(f.slot, f.trigger) for f in result.fires] == [(s, RunTrigger.CATCHUP) for s in missed] + [
            (s, RunTrigger.SCHEDULE) for s in on_time
        ], (expression, zone, slot, now, policy)
        assert result.next_run_at == resume


class TestPlanCostIsIndependentOfTheLag:
    """`once` evaluates the schedule the same number of times whether the job is a minute or a day behind."""

    def test_once_costs_the_same_evaluations_for_any_lag(self, monkeypatch):
        calls = {"prev": 0, "next": 0}
        real_prev, real_next = schedule.prev_fire, schedule.next_fire

        def counting_prev(timing: Timing, at: datetime) -> datetime | None:
            calls["prev"] += 1
            return real_prev(timing, at)

        def counting_next(timing: Timing, after: datetime) -> datetime | None:
            calls["next"] += 1
            return real_next(timing, after)

        monkeypatch.setattr("scheduler.domain.misfire.prev_fire", counting_prev)
        monkeypatch.setattr("scheduler.domain.misfire.next_fire", counting_next)
        timing = Timing("* * * * * *", "Europe/Berlin", EPOCH)
        counts = []
        for lag in (timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)):
            calls.update(prev=0, next=0)
            result = plan(timing, Misfire(policy=MisfirePolicy.ONCE, window_s=604_800), EPOCH, EPOCH + lag)
            catchup = [f.slot for f in result.fires if f.trigger is RunTrigger.CATCHUP]
            assert catchup == [EPOCH + lag - timedelta(seconds=6)]
            counts.append(dict(calls))
        # One slot back for the catch-up; forward, the first slot not missed, then one step after
        # each of the six slots inside the grace (fired normally), the last step giving the next slot.
        assert counts == [{"prev": 1, "next": 7}] * 3
