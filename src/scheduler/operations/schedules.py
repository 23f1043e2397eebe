"""Trying a schedule out: its next fire times, computed as a job with it would fire, storing nothing."""

from __future__ import annotations

from datetime import datetime

from scheduler.domain.schedule import Timing
from scheduler.domain.validation import check_instant
from scheduler.operations.errors import InvalidError
from scheduler.operations.jobs import anchor_for, fire_times, first_fire


def preview(
    *, schedule: str, timezone: str, after: datetime | None, count: int, now: datetime
) -> list[datetime]:
    """The next ``count`` fire times after ``after`` (default ``now``) of a schedule in a zone.

    `@every` counts from ``after`` as it counts from a new job's creation.
    """
    if errors := check_instant("after", after):
        raise InvalidError.of(errors)
    start = after or now
    timing = Timing(schedule, timezone, anchor_at=anchor_for(None, start))
    first_fire(timing, start)
    return fire_times(timing, start, count)
