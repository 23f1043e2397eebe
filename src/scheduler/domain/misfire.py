"""The misfire policy as a pure function: which slots a late claim fires, and where the job goes next.

A slot is *missed* when it is claimed more than ``grace_s`` after its time. A claim within the grace
fires the slot normally. For missed slots, ``skip`` fires none, ``once`` fires the most recent one,
and ``all`` fires each one inside ``window_s`` (the most recent 100 at most); those fires carry the
trigger ``catchup``. A missed slot older than ``window_s`` never fires. The slots that are due but
not missed yet are claimed now, within their grace, so they fire normally in the same claim (at most
100), and the job moves on to its first slot after them. Deferring them to a later claim would put the
job right at the edge of its grace, where any delay makes them missed in turn: a job would then be
caught up again and again and never come back on schedule while runners are busy.

A plan's cost does not grow with the lag: missed slots are found backwards from the present with
`prev_fire` (one evaluation for each slot fired, plus one) rather than by stepping forward through the
outage, and the slots inside the grace cost one evaluation each, a number set by the grace and the
schedule, never by how long the runners were away.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from scheduler.domain.models import Misfire, MisfirePolicy, RunTrigger
from scheduler.domain.schedule import Timing, next_fire, prev_fire

MAX_CATCHUP = 100
_ONE_US = timedelta(microseconds=1)
# Read once: on Python 3.11 an enum member looked up on its class costs a descriptor call, and
# this module plans every fire.
_SCHEDULE = RunTrigger.SCHEDULE
_CATCHUP = RunTrigger.CATCHUP
# The grace of each grace_s met so far: a job's plan compares against it on every claim.
_GRACES: dict[int, timedelta] = {}


class Fire(msgspec.Struct, frozen=True):
    """One slot to record."""

    slot: datetime
    trigger: RunTrigger


class SlotPlan(msgspec.Struct, frozen=True):
    """What a claim does with one due job."""

    fires: list[Fire]
    """Oldest first: the catch-up fires, then the fires within the grace."""
    next_run_at: datetime | None


def plan(timing: Timing, misfire: Misfire, slot: datetime, now: datetime) -> SlotPlan:
    """Decide the fires for a job whose next slot ``slot`` is due at ``now`` (the database clock)."""
    grace = _GRACES.get(misfire.grace_s)
    if grace is None:
        grace = _GRACES[misfire.grace_s] = timedelta(seconds=misfire.grace_s)
    if now - slot <= grace:
        return SlotPlan([Fire(slot, _SCHEDULE)], next_fire(timing, slot))
    missed_before = now - grace  # slots strictly earlier than this are missed
    first_kept = next_fire(timing, max(slot, missed_before) - _ONE_US)
    catchups: list[Fire] = []
    if misfire.policy is not MisfirePolicy.SKIP:
        window_start = max(slot, now - timedelta(seconds=misfire.window_s))
        wanted = 1 if misfire.policy is MisfirePolicy.ONCE else MAX_CATCHUP
        catchups = [Fire(s, _CATCHUP) for s in last_fires(timing, window_start, missed_before, wanted)]
    on_time, resume = _due_within_grace(timing, first_kept, now)
    return SlotPlan(catchups + on_time, resume)


def _due_within_grace(
    timing: Timing, first: datetime | None, now: datetime
) -> tuple[list[Fire], datetime | None]:
    """The slots from ``first`` due at ``now`` (none missed), as normal fires, and the slot after them."""
    fires: list[Fire] = []
    moment = first
    while moment is not None and moment <= now and len(fires) < MAX_CATCHUP:
        fires.append(Fire(moment, _SCHEDULE))
        moment = next_fire(timing, moment)
    return fires, moment


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
