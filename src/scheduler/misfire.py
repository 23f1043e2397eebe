"""The misfire policy as a pure function: which slots a late claim fires, and where the job goes next.

A slot is *missed* when it is claimed more than ``grace_s`` after its time. A claim within the grace
fires the slot normally. For missed slots, ``skip`` fires none, ``once`` fires the most recent one,
and ``all`` fires each one inside ``window_s`` (the most recent 100 at most); those fires carry the
trigger ``catchup``. A missed slot older than ``window_s`` never fires. Either way the job moves on to
its first slot that is not missed, which the next claim fires normally when it is already due.

A plan's cost does not grow with the lag: ``skip`` evaluates the schedule once (the next slot),
``once`` twice (that and the slot it fires), ``all`` once per slot it fires plus one, because missed
slots are found backwards from the present with `prev_fire` rather than by stepping forward through
the outage.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from scheduler.models import Misfire, MisfirePolicy, RunTrigger
from scheduler.schedule import Timing, next_fire, prev_fire

MAX_CATCHUP = 100
_ONE_US = timedelta(microseconds=1)


class Fire(msgspec.Struct, frozen=True):
    """One slot to record."""

    slot: datetime
    trigger: RunTrigger


class SlotPlan(msgspec.Struct, frozen=True):
    """What a claim does with one due job."""

    fires: list[Fire]
    next_run_at: datetime | None
    missed: int
    """Missed slots seen (fired or not) inside the window, up to what was counted."""


def plan(timing: Timing, misfire: Misfire, slot: datetime, now: datetime) -> SlotPlan:
    """Decide the fires for a job whose next slot ``slot`` is due at ``now`` (the database clock)."""
    grace = timedelta(seconds=misfire.grace_s)
    if now - slot <= grace:
        return SlotPlan([Fire(slot, RunTrigger.SCHEDULE)], next_fire(timing, slot), 0)
    missed_before = now - grace  # slots strictly earlier than this are missed
    resume = next_fire(timing, max(slot, missed_before) - _ONE_US)
    if misfire.policy is MisfirePolicy.SKIP:
        return SlotPlan([], resume, 0)
    window_start = max(slot, now - timedelta(seconds=misfire.window_s))
    wanted = 1 if misfire.policy is MisfirePolicy.ONCE else MAX_CATCHUP
    recent = last_fires(timing, window_start, missed_before, wanted)
    return SlotPlan([Fire(s, RunTrigger.CATCHUP) for s in recent], resume, len(recent))


def last_fires(timing: Timing, low: datetime, high: datetime, count: int) -> list[datetime]:
    """Return the last ``count`` fire times in [low, high), oldest first.

    Walks back from ``high`` one slot at a time with `prev_fire`, which finds each directly: the
    cost is at most ``count`` + 1 schedule evaluations however long ago ``low`` was, so a job that
    is an hour behind costs no more to plan than one that is a second behind.
    """
    found: list[datetime] = []
    moment = high - _ONE_US
    while len(found) < count and moment >= low:
        fire = prev_fire(timing, moment)
        if fire is None or fire < low:
            break
        found.append(fire)
        moment = fire - _ONE_US
    found.reverse()
    return found
