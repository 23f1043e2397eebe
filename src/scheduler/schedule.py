"""Schedule expressions: parsing, validation and the pure fire-time arithmetic.

Three kinds of expression are understood:

* cron, 5 fields or 6 with a leading seconds field, plus the macros ``@yearly`` and friends;
* ``@every 1h30m``: fixed intervals counted from an anchor (``start_at`` or the job's creation);
* ``@at 2026-12-01T09:00:00Z``: one instant.

Cron time zones follow Debian cron, as ``cronsim`` does: an expression with a fixed minute and hour
(5 fields, neither starting with ``*``) is matched on the wall clock; a wall time inside a
spring-forward gap fires once at the first instant after the gap, and a wall time repeated by a
fall-back fires at its first occurrence only. Every other expression is matched against the real
passage of time, so an hourly job fires in both copies of a repeated hour and skips the hour that
does not exist.

Fire times are always computed from the previous *scheduled* time, never from when a run finished.
Parsing an expression costs ~100 µs, so compiled schedules are cached per (expression, zone) and
each keeps a short window of upcoming fire times that jobs sharing the expression reuse.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta
from functools import lru_cache
from typing import TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import msgspec
from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

_ONE_US = timedelta(microseconds=1)
_WINDOW = 32
# How far ahead a cron expression may go without a match before it is called never-firing:
# `0 0 29 2 MON` matches only every 28 years or so.
_MAX_YEARS_BETWEEN_MATCHES = 60
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_NAMES = re.compile(r"JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|SUN|MON|TUE|WED|THU|FRI|SAT")
_FIELD_CHARS = re.compile(r"^[0-9*,/#?LW-]+$")
_INTERVAL = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_FIELD_NAMES = ("second", "minute", "hour", "day of month", "month", "day of week")
MAX_INTERVAL = timedelta(days=3660)


class ScheduleError(ValueError):
    """An expression or time zone that cannot be used; the message says what is wrong."""

    def __init__(self, message: str, field: str = "schedule") -> None:
        """Keep the request field the problem belongs to (`schedule` or `timezone`)."""
        super().__init__(message)
        self.field = field


def zone(name: str) -> ZoneInfo:
    """Return the IANA zone, or raise ScheduleError naming the `timezone` field."""
    return _zone(name)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    if not name or name.startswith(("/", ".")) or ".." in name or name not in _zone_names():
        raise ScheduleError(f"unknown IANA time zone {name!r}", field="timezone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown IANA time zone {name!r}", field="timezone") from None


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


# --------------------------------------------------------------------------------------- zones


@dataclass(frozen=True, slots=True)
class _Segment:
    """A stretch of time over which a zone's UTC offset does not change."""

    offset: timedelta
    end: datetime | None  # the next transition (UTC), None when none is known ahead


class _ZoneClock:
    """The transitions of one zone, found by sampling its offset day by day and bisecting."""

    # Years scanned ahead of an instant before concluding the zone has no further transition.
    _HORIZON_YEARS = 12

    def __init__(self, tz: ZoneInfo) -> None:
        self._tz = tz
        self._scanned: set[int] = set()
        self._transitions: list[datetime] = []  # sorted UTC instants where the offset changes

    def offset_at(self, instant: datetime) -> timedelta:
        offset = instant.astimezone(self._tz).utcoffset()
        return offset if offset is not None else timedelta(0)

    def segment_at(self, instant: datetime) -> _Segment:
        """Return the offset in force at ``instant`` and when it next changes."""
        index = bisect.bisect_right(self._transitions, instant)
        for year in range(instant.year, min(instant.year + self._HORIZON_YEARS, MAXYEAR)):
            if year not in self._scanned:
                self._scan_year(year)
                index = bisect.bisect_right(self._transitions, instant)
            # Years are scanned lazily and out of order: only a transition inside a year scanned
            # in this walk (or before it) may end the segment.
            if index < len(self._transitions) and self._transitions[index].year <= year:
                return _Segment(self.offset_at(instant), self._transitions[index])
        return _Segment(self.offset_at(instant), None)

    def transition_after(self, instant: datetime) -> datetime:
        """Return the first transition after ``instant`` (there must be one, e.g. inside a gap)."""
        end = self.segment_at(instant).end
        if end is None:  # pragma: no cover - only reachable with a zone database that lies
            raise ScheduleError("time zone has no transition where one was expected", field="timezone")
        return end

    def _scan_year(self, year: int) -> None:
        if year in self._scanned or year >= MAXYEAR:
            return
        self._scanned.add(year)
        day = datetime(year, 1, 1, tzinfo=UTC)
        stop = datetime(year + 1, 1, 1, tzinfo=UTC)
        before = self.offset_at(day)
        while day < stop:
            following = day + timedelta(days=1)
            after = self.offset_at(following)
            if after != before:
                self._transitions.append(self._bisect(day, following, before))
                before = after
            day = following
        self._transitions.sort()

    def _bisect(self, low: datetime, high: datetime, offset_low: timedelta) -> datetime:
        # Invariant: offset(low) == offset_low != offset(high); narrow to the second.
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            middle = middle.replace(microsecond=0)
            if middle <= low:
                middle = low + timedelta(seconds=1)
            if self.offset_at(middle) == offset_low:
                low = middle
            else:
                high = middle
        return high


@lru_cache(maxsize=1024)
def _zone_clock(name: str) -> _ZoneClock:
    return _ZoneClock(zone(name))


# --------------------------------------------------------------------------------- expressions


class Cron:
    """A compiled cron expression in one zone, with a window of upcoming fire times.

    Not thread-safe: each process (API worker, runner) uses it from its own event loop thread.
    """

    def __init__(self, expression: str, timezone: str) -> None:
        """Validate and compile; raise ScheduleError naming what is wrong."""
        fields = _cron_fields(expression)
        self.expression = expression
        self.timezone = timezone
        self._clock = _zone_clock(timezone)
        with_seconds = len(fields) == 6  # noqa: PLR2004 - six fields means a seconds field
        canonical, day_or = _canonical(fields)
        try:
            self._iter = croniter(
                " ".join(canonical),
                datetime(2000, 1, 1),  # noqa: DTZ001 - croniter walks naive wall-clock time here
                second_at_beginning=with_seconds,
                max_years_between_matches=_MAX_YEARS_BETWEEN_MATCHES,
                day_or=day_or,
            )
        except (CroniterBadCronError, CroniterError, ValueError, KeyError) as exc:
            raise ScheduleError(f"invalid cron expression {expression!r}: {exc}") from None
        minute, hour = (fields[1], fields[2]) if with_seconds else (fields[0], fields[1])
        self._wall_clock = (
            timezone not in ("UTC", "Etc/UTC")
            and not with_seconds
            and not minute.startswith("*")
            and not hour.startswith("*")
        )
        self._window_start: datetime | None = None
        self._window: list[datetime] = []

    def next_after(self, after: datetime) -> datetime | None:
        """Return the first fire time strictly after ``after``, or None if there is none."""
        if after.tzinfo is not UTC:
            after = after.astimezone(UTC)
        window = self._window
        start = self._window_start
        if start is not None and start <= after and window and after < window[-1]:
            return window[bisect.bisect_right(window, after)]
        self._window_start = after
        self._window = window = []
        moment = after
        for _ in range(_WINDOW):
            found = self._compute_next(moment)
            if found is None:
                break
            window.append(found)
            moment = found
        if not window:
            return None
        return window[0]

    def _naive_next(self, naive: datetime) -> datetime | None:
        self._iter.set_current(naive, force=True)
        try:
            found: datetime = self._iter.get_next(datetime)
        except (CroniterBadDateError, OverflowError, ValueError):
            return None
        return found

    def _compute_next(self, after: datetime) -> datetime | None:
        if self._wall_clock:
            return self._next_on_wall_clock(after)
        return self._next_in_real_time(after)

    def _next_in_real_time(self, after: datetime) -> datetime | None:
        # Within a segment of constant offset, wall time and real time advance together.
        moment = after
        segment = self._clock.segment_at(moment)
        while True:
            wall = (moment + segment.offset).replace(tzinfo=None)
            found = self._naive_next(wall)
            if found is None:
                return None
            candidate = (found - segment.offset).replace(tzinfo=UTC)
            if segment.end is None or candidate < segment.end:
                return candidate
            # The match lies past a transition: look again from the transition itself.
            moment = segment.end - _ONE_US
            segment = self._clock.segment_at(segment.end)

    def _next_on_wall_clock(self, after: datetime) -> datetime | None:
        wall = after.astimezone(self._clock._tz).replace(tzinfo=None)  # noqa: SLF001
        while True:
            found = self._naive_next(wall)
            if found is None:
                return None
            instant = self._resolve_wall(found)
            if instant > after:
                return instant
            wall = found

    def _resolve_wall(self, wall: datetime) -> datetime:
        tz = self._clock._tz  # noqa: SLF001
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if first.astimezone(tz).replace(tzinfo=None) == wall:
            return first  # a real wall time; its first occurrence when repeated
        # Inside a spring-forward gap: the first instant after it is the transition itself.
        earliest = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        return self._clock.transition_after(min(earliest, first))


def _cron_fields(expression: str) -> list[str]:
    text = _MACROS.get(expression.strip().lower(), expression)
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"cron expression {expression!r} has {len(fields)} fields; expected 5, "
            "or 6 with a leading seconds field"
        )
    names = _FIELD_NAMES if len(fields) == 6 else _FIELD_NAMES[1:]  # noqa: PLR2004
    for value, name in zip(fields, names, strict=True):
        if not _FIELD_CHARS.match(_NAMES.sub("0", value.upper())):
            raise ScheduleError(f"cron {name} field {value!r} is not valid")
    return fields


# (low, high) of each field, in the order of a 6-field expression.
_BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_ITEM = re.compile(r"^(\*|[0-9A-Z]+)(?:-([0-9A-Z]+))?(?:/(\d+))?$")


def _number(token: str, position: int) -> int:
    if position == 4 and token in _MONTHS:  # noqa: PLR2004 - the month field
        return _MONTHS.index(token) + 1
    if position == 5 and token in _DAYS:  # noqa: PLR2004 - the day-of-week field
        return _DAYS.index(token)
    if not token.isdigit():
        raise ScheduleError(f"cron {_FIELD_NAMES[position]} field has an unknown value {token!r}")
    return int(token)


def _expand(value: str, position: int) -> set[int] | None:
    """Expand a field of plain values, ranges, steps and names; None when it uses L, W or #.

    Done here rather than by croniter, which mis-expands ranges such as `3-3` and `2-2/3`.
    """
    low, high = _BOUNDS[position]
    name = _FIELD_NAMES[position]
    found: set[int] = set()
    for item in value.upper().replace("?", "*").split(","):
        if any(mark in item for mark in "LW#"):
            return None
        match = _ITEM.match(item)
        if not match:
            raise ScheduleError(f"cron {name} field {value!r} is not valid")
        start_token, end_token, step_token = match.groups()
        if start_token == "*":  # noqa: S105 - a cron wildcard, not a password
            if end_token is not None:
                raise ScheduleError(f"cron {name} field {value!r} is not valid")
            start, end = low, high
        else:
            start = _number(start_token, position)
            end = _number(end_token, position) if end_token is not None else (high if step_token else start)
        step = int(step_token) if step_token else 1
        if not (low <= start <= high and low <= end <= high):
            raise ScheduleError(f"cron {name} field {value!r} is out of range {low}-{high}")
        if start > end:
            raise ScheduleError(f"cron {name} field {value!r} has a range that runs backwards")
        if step < 1:
            raise ScheduleError(f"cron {name} field {value!r} has a step of 0")
        found.update(range(start, end + 1, step))
    if position == 5 and 7 in found:  # noqa: PLR2004 - 7 is Sunday too
        found = (found - {7}) | {0}
    return found


def _canonical(fields: list[str]) -> tuple[list[str], bool]:
    """Rewrite fields as explicit lists for croniter and decide how the two day fields combine.

    Debian cron ORs day-of-month and day-of-week unless either starts with `*`, then ANDs them.
    """
    offset = 0 if len(fields) == 6 else 1  # noqa: PLR2004
    day_or = not (fields[-3].startswith("*") or fields[-1].startswith("*"))
    out: list[str] = []
    full: dict[int, bool] = {}
    for index, value in enumerate(fields):
        position = index + offset
        values = _expand(value, position)
        if values is None:
            out.append(value)
            continue
        low, high = _BOUNDS[position]
        top = 6 if position == 5 else high  # noqa: PLR2004
        full[position] = values >= set(range(low, top + 1))
        out.append("*" if full[position] else ",".join(str(v) for v in sorted(values)))
    if day_or and (full.get(3) or full.get(5)):
        # One day field matches every day, so their OR does too.
        out[3 - offset], out[5 - offset] = "*", "*"
    return out, day_or


@dataclass(frozen=True, slots=True)
class Every:
    """``@every``: fire at anchor + k * interval."""

    interval: timedelta

    def next_after(self, after: datetime, anchor: datetime) -> datetime:
        """Return the first anchor + k * interval (k >= 0) strictly after ``after``."""
        if after < anchor:
            return anchor
        steps = (after - anchor) // self.interval + 1
        return anchor + steps * self.interval


@dataclass(frozen=True, slots=True)
class At:
    """``@at``: fire once."""

    instant: datetime

    def next_after(self, after: datetime) -> datetime | None:
        """Return the instant if it is still ahead of ``after``."""
        return self.instant if self.instant > after else None


Compiled: TypeAlias = Cron | Every | At


@lru_cache(maxsize=16384)
def compile_schedule(expression: str, timezone: str) -> Compiled:
    """Parse and validate an expression in a zone; cached, so jobs sharing one share its work."""
    zone(timezone)
    text = expression.strip()
    if not text:
        raise ScheduleError("schedule is empty")
    lowered = text.lower()
    if lowered.startswith("@every"):
        return _parse_every(text[len("@every") :].strip())
    if lowered.startswith("@at"):
        return _parse_at(text[len("@at") :].strip())
    if lowered.startswith("@") and lowered not in _MACROS:
        raise ScheduleError(
            f"unknown schedule macro {text.split()[0]!r}; use one of "
            + ", ".join(sorted(_MACROS))
            + ", @every or @at"
        )
    return Cron(text, timezone)


def _parse_every(spec: str) -> Every:
    match = _INTERVAL.match(spec.replace(" ", "").lower())
    if not spec or not match or not any(match.groups()):
        raise ScheduleError(f"interval {spec!r} is not valid; write it like @every 30s or @every 1h30m")
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    try:
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        raise ScheduleError(f"interval {spec!r} is too long") from None
    if interval < timedelta(seconds=1):
        raise ScheduleError("interval must be at least 1s")
    if interval > MAX_INTERVAL:
        raise ScheduleError("interval must be at most 3660d")
    return Every(interval)


def _parse_at(spec: str) -> At:
    try:
        instant = datetime.fromisoformat(spec)
    except ValueError:
        raise ScheduleError(f"@at time {spec!r} is not an RFC 3339 timestamp") from None
    if instant.tzinfo is None:
        raise ScheduleError(f"@at time {spec!r} needs an offset, e.g. Z or +01:00")
    return At(instant.astimezone(UTC))


class Timing(msgspec.Struct, frozen=True):
    """Everything that decides when a job fires (a Struct: the runner builds one per fire)."""

    schedule: str
    timezone: str
    anchor_at: datetime
    start_at: datetime | None = None
    end_at: datetime | None = None


def next_fire(timing: Timing, after: datetime) -> datetime | None:
    """Return the job's first fire time strictly after ``after``, or None when it has no more.

    Honors ``start_at`` (first fire at or after it) and ``end_at`` (no fire after it).
    """
    compiled = compile_schedule(timing.schedule, timing.timezone)
    base = after
    if timing.start_at is not None and timing.start_at > base:
        base = timing.start_at - _ONE_US
    if isinstance(compiled, Every):
        found: datetime | None = compiled.next_after(base, timing.anchor_at)
    else:
        found = compiled.next_after(base)
    if found is None or (timing.end_at is not None and found > timing.end_at):
        return None
    return found


def fire_times(timing: Timing, after: datetime, count: int) -> list[datetime]:
    """Return up to ``count`` consecutive fire times after ``after``."""
    times: list[datetime] = []
    moment = after
    while len(times) < count:
        found = next_fire(timing, moment)
        if found is None:
            break
        times.append(found)
        moment = found
    return times


def validate(timing: Timing, now: datetime) -> datetime:
    """Check that the job will fire at least once after ``now``; return that first fire time."""
    first = next_fire(timing, now)
    if first is None:
        if timing.end_at is not None and timing.start_at is not None and timing.end_at < timing.start_at:
            raise ScheduleError("end_at is before start_at", field="end_at")
        compiled = compile_schedule(timing.schedule, timing.timezone)
        if isinstance(compiled, At):
            raise ScheduleError("the @at time has passed; the job would never fire")
        if timing.end_at is not None and next_fire(
            Timing(timing.schedule, timing.timezone, timing.anchor_at, timing.start_at), now
        ):
            raise ScheduleError("the schedule has no fire time before end_at", field="end_at")
        raise ScheduleError(f"schedule {timing.schedule!r} never fires")
    return first
