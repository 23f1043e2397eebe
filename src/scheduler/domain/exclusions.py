"""Exclusions: the dates and calendars on which a job does not fire, whatever its schedules say.

A job's exclusions are read in one time zone (their own, or the zone of the job's first schedule
entry). A fire is excluded when its local date is one of the listed ``dates``, or when its local
minute matches one of the ``calendars``, each a 5-field cron expression (``* * 25 12 *`` is every
minute of Christmas Day, ``* 0-6 * * *`` the night, ``* * * * SAT,SUN`` the weekend).

Skipping excluded fires costs a number of steps set by the exclusions, never by the schedule: an
excluded fire moves the search to the end of the excluded span it falls in — the end of its local
day for a date or a calendar whose hour and minute fields are ``*``, the end of its hour for a
calendar whose minute field is ``*``, the end of its minute otherwise — so an every-second job on a
weekend calendar costs two steps, not 172,800.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import msgspec

from scheduler.domain.cron import Pattern, cron_fields
from scheduler.domain.zones import ScheduleError, zone_clock

MAX_DATES = 1000
MAX_CALENDARS = 20
# Excluded spans skipped in one search before a job is called never-firing: ten years of whole days.
MAX_SKIPS = 3660
_ONE_US = timedelta(microseconds=1)
_ONE_MINUTE = timedelta(minutes=1)
_ONE_HOUR = timedelta(hours=1)
_FIELDS = 5


class Exclusions(msgspec.Struct, frozen=True):
    """When a job does not fire: local dates and cron-style calendars, in one zone."""

    dates: tuple[date, ...] = ()
    calendars: tuple[str, ...] = ()
    timezone: str = "UTC"


class _Calendar:
    """One compiled calendar and the length of the span a match stands for."""

    __slots__ = ("pattern", "span")

    def __init__(self, expression: str) -> None:
        fields = cron_fields(expression)
        if len(fields) != _FIELDS:
            raise ScheduleError(
                f"exclusion calendar {expression!r} has {len(fields)} fields; a calendar has 5 "
                "(minute hour day-of-month month day-of-week)",
                field="exclusions",
            )
        self.pattern = Pattern(fields)
        minute, hour = fields[0], fields[1]
        self.span = "day" if minute == "*" and hour == "*" else "hour" if minute == "*" else "minute"

    def matches(self, wall: datetime) -> bool:
        pattern = self.pattern
        return (
            wall.month in pattern.months
            and wall.hour in pattern.hours
            and wall.minute in pattern.minutes
            and wall.day in pattern.days(wall.year, wall.month)
        )


@lru_cache(maxsize=4096)
def _compiled(calendars: tuple[str, ...]) -> tuple[_Calendar, ...]:
    return tuple(_Calendar(expression) for expression in calendars)


def check(exclusions: Exclusions) -> None:
    """Raise ScheduleError (field ``exclusions``) naming what is wrong with them."""
    try:
        zone_clock(exclusions.timezone)
    except ScheduleError as exc:
        raise ScheduleError(f"exclusions: {exc}", field="exclusions") from None
    if len(exclusions.dates) > MAX_DATES:
        raise ScheduleError(f"exclusions list at most {MAX_DATES} dates", field="exclusions")
    if len(exclusions.calendars) > MAX_CALENDARS:
        raise ScheduleError(f"exclusions list at most {MAX_CALENDARS} calendars", field="exclusions")
    for expression in exclusions.calendars:
        try:
            _Calendar(expression)
        except ScheduleError as exc:
            raise ScheduleError(f"exclusion calendar {expression!r}: {exc}", field="exclusions") from None


def excluded_span(exclusions: Exclusions, instant: datetime) -> tuple[datetime, datetime] | None:
    """Return [start, end) of the excluded span holding ``instant`` (UTC), or None if it is not excluded."""
    clock = zone_clock(exclusions.timezone)
    local = instant.astimezone(clock.tz)
    wall = local.replace(tzinfo=None)
    span: str | None = "day" if wall.date() in exclusions.dates else None
    if span is None:
        for calendar in _compiled(exclusions.calendars):
            if calendar.matches(wall):
                span = calendar.span
                if span == "day":
                    break
    if span is None:
        return None
    if span == "day":
        midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        return clock.resolve_wall(midnight), clock.resolve_wall(midnight + timedelta(days=1))
    # Hours and minutes are counted in real time from the local reading: a zone's offset is a whole
    # number of minutes, so a local minute or hour boundary is a real one.
    start = instant.astimezone(UTC) - timedelta(seconds=wall.second, microseconds=wall.microsecond)
    if span == "hour":
        start -= timedelta(minutes=wall.minute)
        return start, start + _ONE_HOUR
    return start, start + _ONE_MINUTE
