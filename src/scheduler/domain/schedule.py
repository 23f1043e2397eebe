"""Schedule expressions: parsing, validation and the pure fire-time arithmetic.

Three kinds of expression are understood:

* cron, 5 fields or 6 with a leading seconds field, plus the macros ``@yearly`` and friends;
* ``@every 1h30m``: fixed intervals counted from an anchor (``start_at`` or the job's creation);
* ``@at 2026-12-01T09:00:00Z``: one instant.

Day fields follow Debian cron too: a restricted day-of-month and a restricted day-of-week are ORed
whatever their form (``L``, ``LW``, ``15W``, ``MON#2``, ``5L`` included); when either starts with
``*`` or is ``?`` (which means "no specific value" and is allowed in those two fields only) they
are ANDed, which leaves the other field deciding. Forms with no exact meaning are refused.
Month and weekday names are read in any case wherever a number may stand (``Sun-Wed``,
``jan,Jul``, ``MON-FRI/2``, ``wed#2``, ``FRIL``).

A schedule is printable ASCII, its fields separated by ASCII spaces or tabs; any other character
(U+00A0, U+3000, a line feed ...) is refused with a message naming it, never read as a separator.

Cron time zones follow Debian cron, as ``cronsim`` does: an expression with a fixed minute and hour
(5 fields, neither starting with ``*``) is matched on the wall clock; a wall time inside a
spring-forward gap fires once at the first instant after the gap, and a wall time repeated by a
fall-back fires at its first occurrence only. Every other expression is matched against the real
passage of time, so an hourly job fires in both copies of a repeated hour and skips the hour that
does not exist.

Fire times are always computed from the previous *scheduled* time, never from when a run finished.
Parsing an expression costs tens of µs, so compiled schedules are cached per (expression, zone), and
each keeps the fire times it found lately, forwards and backwards, for jobs sharing the expression.
Both directions are computed directly from the fields, so finding the slot before or after any
instant costs the same few µs however far the neighbouring slots lie.
"""

from __future__ import annotations

import bisect
import calendar
import re
import unicodedata
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, UTC, datetime, timedelta
from functools import lru_cache
from importlib import resources
from typing import TypeAlias
from zoneinfo import ZoneInfo

import msgspec

_ONE_US = timedelta(microseconds=1)
_ONE_SECOND = timedelta(seconds=1)
_ONE_MINUTE = timedelta(minutes=1)
# The furthest any zone has set its clocks back at once, with room to spare: a wall time up to this
# far past the current reading may have occurred already.
_LONGEST_SET_BACK = timedelta(days=2)
_WINDOW = 32  # upcoming fire times kept per compiled expression
# Past fire times kept per compiled expression: room for a catch-up of every missed slot (at most
# 100) that the jobs sharing the expression then reuse.
_BACK_WINDOW = 128
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
_FIELD_SEPARATOR = re.compile(r"[ \t]+")
# What a schedule may contain: printable ASCII and tabs. str.split() would take U+00A0 or U+3000
# for a separator and str.upper() turns U+017F into S, so anything else would be read as something
# its author did not type.
_NOT_SCHEDULE_TEXT = re.compile(r"[^\t -~]")
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
    if name in _HOST_DEPENDENT_ZONES:
        raise ScheduleError(
            f"time zone {name!r} is refused: it names no place (it means the host's zone, or"
            " none), so hosts could disagree; use an IANA name such as 'Europe/Berlin'",
            field="timezone",
        )
    if name not in _zone_names():
        raise ScheduleError(f"unknown IANA time zone {name!r}", field="timezone")
    try:
        # Read from the tzdata package the service ships, never from the host's zone files, so the
        # API and every runner agree on each zone whatever host they run on.
        with resources.files("tzdata").joinpath("zoneinfo", *name.split("/")).open("rb") as data:
            return ZoneInfo.from_file(data, key=name)
    except (OSError, ValueError):
        raise ScheduleError(f"unknown IANA time zone {name!r}", field="timezone") from None


# Names a zone database may carry that mean "whatever this host is set to" or nothing at all.
_HOST_DEPENDENT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    """The zone names of the tzdata package: plain names, no paths, nothing host-dependent."""
    listed = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return frozenset(listed) - _HOST_DEPENDENT_ZONES


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
        # The last segment looked up, as (low, high, segment, start): every instant in [low, high)
        # has that segment and that start. Consecutive fire times nearly always share one.
        self._memo: tuple[datetime, datetime, _Segment, datetime] | None = None

    @property
    def tz(self) -> ZoneInfo:
        """The zone itself."""
        return self._tz

    def offset_at(self, instant: datetime) -> timedelta:
        offset = instant.astimezone(self._tz).utcoffset()
        return offset if offset is not None else timedelta(0)

    def segment_at(self, instant: datetime) -> _Segment:
        """Return the offset in force at ``instant`` and when it next changes."""
        memo = self._memo
        if memo is None or not memo[0] <= instant < memo[1]:
            memo = self._remember(instant)
        return memo[2]

    def segment_start(self, instant: datetime) -> datetime:
        """Return the last transition at or before ``instant``.

        When none lies within the scanned horizon, the start of that horizon: the offset is
        constant from there to ``instant`` either way, which is all a caller relies on.
        """
        memo = self._memo
        if memo is None or not memo[0] <= instant < memo[1]:
            memo = self._remember(instant)
        return memo[3]

    def _remember(self, instant: datetime) -> tuple[datetime, datetime, _Segment, datetime]:
        segment = self._find_segment(instant)
        start = self._find_start(instant)
        year_start = datetime(instant.year, 1, 1, tzinfo=UTC)
        # Without a known transition ahead (or behind), the answer holds for this year only: an
        # instant in another year looks over another horizon.
        if segment.end is not None:
            high = segment.end
        elif instant.year < MAXYEAR:
            high = datetime(instant.year + 1, 1, 1, tzinfo=UTC)
        else:
            high = datetime.max.replace(tzinfo=UTC)
        low = start if start.year > instant.year - self._HORIZON_YEARS else max(start, year_start)
        self._memo = memo = (low, high, segment, start)
        return memo

    def _find_segment(self, instant: datetime) -> _Segment:
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

    def _find_start(self, instant: datetime) -> datetime:
        lowest = max(instant.year - self._HORIZON_YEARS, MINYEAR + 1)
        for year in range(instant.year, lowest - 1, -1):
            self._scan_year(year)
            index = bisect.bisect_right(self._transitions, instant)
            # As in segment_at: only a transition inside a year scanned in this walk counts.
            if index and self._transitions[index - 1].year >= year:
                return self._transitions[index - 1]
        return datetime(lowest, 1, 1, tzinfo=UTC)

    def transitions_between(self, low: datetime, high: datetime) -> list[datetime]:
        """Return the transitions in (low, high]."""
        for year in range(low.year, high.year + 1):
            self._scan_year(year)
        return self._transitions[
            bisect.bisect_right(self._transitions, low) : bisect.bisect_right(self._transitions, high)
        ]

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
        self._pattern = _Pattern(fields)
        with_seconds = len(fields) == 6  # noqa: PLR2004 - six fields means a seconds field
        minute, hour = (fields[1], fields[2]) if with_seconds else (fields[0], fields[1])
        self._wall_clock = (
            timezone not in ("UTC", "Etc/UTC")
            and not with_seconds
            and not minute.startswith("*")
            and not hour.startswith("*")
        )
        self._window_start: datetime | None = None
        self._window: list[datetime] = []
        # The same for the way back, filled lazily: _back holds every fire time in
        # [_back[0], _back_top], in order; _back_done says none lies before _back[0].
        self._back_top: datetime | None = None
        self._back: list[datetime] = []
        self._back_done = False

    def next_after(self, after: datetime) -> datetime | None:
        """Return the first fire time strictly after ``after``, or None if there is none."""
        if after.tzinfo is not UTC:
            after = after.astimezone(UTC)
        window = self._window
        start = self._window_start
        if start is not None and start <= after and window and after < window[-1]:
            return window[bisect.bisect_right(window, after)]
        # One evaluation per miss: a job asking from its own position pays for one fire time,
        # not for a window it may never use.
        found = self._compute_next(after)
        if found is not None and window and after == window[-1] and len(window) < _WINDOW:
            window.append(found)  # the walk forward goes on from the last known fire time
            return found
        self._window_start = after
        self._window = [] if found is None else [found]
        return found

    def last_at_or_before(self, at: datetime) -> datetime | None:
        """Return the latest fire time at or before ``at``, or None if there is none.

        The mirror of `next_after` over the same set of instants, computed directly: its cost does
        not depend on how far back the previous slots lie.
        """
        if at.tzinfo is not UTC:
            at = at.astimezone(UTC)
        # Jobs sharing an expression and claimed together ask about the same instants (and a
        # catch-up of all missed slots walks back slot by slot), so answers already found are
        # kept: _back holds every fire time in [_back[0], _back_top], in order.
        back = self._back
        top = self._back_top
        if top is not None and at <= top:
            index = bisect.bisect_right(back, at) - 1
            if index >= 0:
                return back[index]
            if self._back_done:
                return None
        found = self._compute_last(at)
        if top is not None and back and at <= top and at >= back[0] - _ONE_US and len(back) < _BACK_WINDOW:
            # Nothing lies between `at` and the oldest known fire time: the walk goes on.
            if found is None:
                self._back_done = True
            else:
                back.insert(0, found)
            return found
        self._back_top = at
        self._back = [] if found is None else [found]
        self._back_done = found is None
        return found

    def _compute_last(self, at: datetime) -> datetime | None:
        if self._wall_clock:
            return self._last_on_wall_clock(at)
        return self._last_in_real_time(at)

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
            found = self._pattern.next_after(wall)
            if found is None:
                return None
            candidate = (found - segment.offset).replace(tzinfo=UTC)
            if segment.end is None or candidate < segment.end:
                return candidate
            # The match lies past a transition: look again from the transition itself.
            moment = segment.end - _ONE_US
            segment = self._clock.segment_at(segment.end)

    def _last_in_real_time(self, at: datetime) -> datetime | None:
        # The mirror of _next_in_real_time: an instant belongs to the segment that starts at or
        # before it (a transition instant already has the new offset).
        moment = at
        while moment.year > MINYEAR:
            offset = self._clock.segment_at(moment).offset
            start = self._clock.segment_start(moment)
            found = self._pattern.last_at_or_before((moment + offset).replace(tzinfo=None))
            if found is None:
                return None
            candidate = (found - offset).replace(tzinfo=UTC)
            if candidate >= start:
                return candidate
            # The match lies before a transition: look again from just before it.
            moment = start - _ONE_US
        return None

    def _next_on_wall_clock(self, after: datetime) -> datetime | None:
        wall = after.astimezone(self._clock.tz).replace(tzinfo=None)
        while True:
            found = self._pattern.next_after(wall)
            if found is None:
                return None
            instant = self._resolve_wall(found)
            if instant > after:
                return instant
            wall = found

    def _last_on_wall_clock(self, at: datetime) -> datetime | None:
        # Resolving wall times to instants never reverses their order, so the latest wall time
        # that resolves at or before `at` gives the answer. Such a wall time can lie after the
        # wall clock's reading at `at` when the clock was set back since (the first copy of a
        # repeated hour came earlier), so the search starts from the highest reading the wall
        # clock has shown up to `at`.
        tz = self._clock.tz
        ceiling = at.astimezone(tz).replace(tzinfo=None)
        for transition in self._clock.transitions_between(at - _LONGEST_SET_BACK, at):
            before = (transition - _ONE_US).astimezone(tz).replace(tzinfo=None)
            ceiling = max(ceiling, before)
        wall = ceiling
        while True:
            found = self._pattern.last_at_or_before(wall)
            if found is None:
                return None
            instant = self._resolve_wall(found)
            if instant <= at:
                return instant
            wall = found - _ONE_US

    def _resolve_wall(self, wall: datetime) -> datetime:
        tz = self._clock.tz
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if first.astimezone(tz).replace(tzinfo=None) == wall:
            return first  # a real wall time; its first occurrence when repeated
        # Inside a spring-forward gap: the first instant after it is the transition itself.
        earliest = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        return self._clock.transition_after(min(earliest, first))


def _cron_fields(expression: str) -> list[str]:
    text = _MACROS.get(expression.strip(" \t").lower(), expression)
    text = text.strip(" \t")
    fields = _FIELD_SEPARATOR.split(text) if text else []
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
_DAY_OF_MONTH = 3
_MONTH = 4
_DAY_OF_WEEK = 5
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_ITEM = re.compile(r"^(\*|[0-9A-Z]+)(?:-([0-9A-Z]+))?(?:/(\d+))?$")
_NEAREST_WEEKDAY = re.compile(r"^(\d+)W$")
_NTH_WEEKDAY = re.compile(r"^([0-9]+|[A-Z]{3})#(\d+)$")
_LAST_WEEKDAY_OF = re.compile(r"^([0-9]+|[A-Z]{3})L$")
_SATURDAY, _SUNDAY = 6, 0


def _has_operator(item: str, operators: str) -> bool:
    """Whether one list item (upper case) uses any of ``operators``, its names taken out first.

    The operators `L` and `W` are letters, and so are the names, two of which hold one (WED, JUL):
    looking at the item itself would take `WED` for a `W` form and `JUL` for an `L` form.
    """
    rest = _NAMES.sub("", item)
    return any(mark in rest for mark in operators)


def _number(token: str, position: int) -> int:
    if position == _MONTH and token in _MONTHS:
        return _MONTHS.index(token) + 1
    if position == _DAY_OF_WEEK and token in _DAYS:
        return _DAYS.index(token)
    if not token.isdigit():
        raise ScheduleError(f"cron {_FIELD_NAMES[position]} field has an unknown value {token!r}")
    return int(token)


def _expand_item(item: str, value: str, position: int) -> set[int]:
    """Expand one list item of plain values, a range, a step or a name.

    Done here rather than by a library: croniter, for one, mis-expands ranges such as `3-3` and
    `2-2/3`.
    """
    low, high = _BOUNDS[position]
    name = _FIELD_NAMES[position]
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
    found = set(range(start, end + 1, step))
    if position == _DAY_OF_WEEK and 7 in found:  # noqa: PLR2004 - 7 is Sunday too
        found = (found - {7}) | {0}
    return found


def _expand(value: str, position: int) -> tuple[int, ...]:
    """Expand a seconds, minutes, hours or months field into its sorted values."""
    if "?" in value:
        raise ScheduleError(
            f"cron {_FIELD_NAMES[position]} field {value!r} is not valid: "
            "'?' is allowed only in the day-of-month and day-of-week fields"
        )
    found: set[int] = set()
    for item in value.upper().split(","):
        if _has_operator(item, "LW#"):
            raise ScheduleError(
                f"cron {_FIELD_NAMES[position]} field {value!r} is not valid: "
                "L, W and # belong to the day fields"
            )
        found |= _expand_item(item, value, position)
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class _DayRule:
    """What one day field asks for: plain values plus the L, W and # forms."""

    values: frozenset[int]  # days of the month (1-31), or weekdays (0 = Sunday)
    unrestricted: bool  # starts with `*` or is `?`: it does not restrict the other day field
    last: bool = False  # `L`: the last day of the month
    last_weekday: bool = False  # `LW`: the last Monday-to-Friday of the month
    nearest: tuple[int, ...] = ()  # `15W`: the Monday-to-Friday nearest the 15th, inside the month
    nth: tuple[tuple[int, int], ...] = ()  # `MON#2`: (weekday, k), the k-th such weekday
    last_of: frozenset[int] = frozenset()  # `5L`: the last such weekday of the month


def _weekday(first: int, day: int) -> int:
    """Cron weekday (0 = Sunday) of ``day`` in a month whose 1st falls on ``first``."""
    return (first + day - 1) % 7


def _parse_day_of_month(value: str) -> _DayRule:
    text = value.upper()
    if text == "?":
        return _DayRule(frozenset(range(1, 32)), unrestricted=True)
    values: set[int] = set()
    last = last_weekday = False
    nearest: list[int] = []
    for item in text.split(","):
        if item == "L":
            last = True
        elif item == "LW":
            last_weekday = True
        elif match := _NEAREST_WEEKDAY.match(item):
            day = int(match.group(1))
            if not 1 <= day <= 31:  # noqa: PLR2004
                raise ScheduleError(f"cron day of month field {value!r} is out of range 1-31")
            nearest.append(day)
        elif _has_operator(item, "LW#?"):
            raise ScheduleError(
                f"cron day of month field {value!r} is not valid: use a day, a range, a step, "
                "L (last day), LW (last weekday), 15W (weekday nearest the 15th), or ? alone"
            )
        else:
            values |= _expand_item(item, value, _DAY_OF_MONTH)
    return _DayRule(
        frozenset(values),
        unrestricted=text.startswith("*"),
        last=last,
        last_weekday=last_weekday,
        nearest=tuple(sorted(set(nearest))),
    )


def _weekday_number(token: str, value: str) -> int:
    day = _number(token, _DAY_OF_WEEK)
    if not 0 <= day <= 7:  # noqa: PLR2004
        raise ScheduleError(f"cron day of week field {value!r} is out of range 0-7")
    return day % 7


def _parse_day_of_week(value: str) -> _DayRule:
    text = value.upper()
    if text == "?":
        return _DayRule(frozenset(range(7)), unrestricted=True)
    values: set[int] = set()
    nth: set[tuple[int, int]] = set()
    last_of: set[int] = set()
    for item in text.split(","):
        if match := _NTH_WEEKDAY.match(item):
            week = int(match.group(2))
            if not 1 <= week <= 5:  # noqa: PLR2004
                raise ScheduleError(f"cron day of week field {value!r}: # takes 1 to 5")
            nth.add((_weekday_number(match.group(1), value), week))
        elif match := _LAST_WEEKDAY_OF.match(item):
            last_of.add(_weekday_number(match.group(1), value))
        elif _has_operator(item, "LW#?"):
            raise ScheduleError(
                f"cron day of week field {value!r} is not valid: use a weekday, a range, a step, "
                "MON#2 (second Monday), 5L (last Friday), or ? alone"
            )
        else:
            values |= _expand_item(item, value, _DAY_OF_WEEK)
    return _DayRule(
        frozenset(values),
        unrestricted=text.startswith("*"),
        nth=tuple(sorted(nth)),
        last_of=frozenset(last_of),
    )


def _days_of_month(rule: _DayRule, length: int, first: int) -> set[int]:
    days = {day for day in rule.values if day <= length}
    if rule.last:
        days.add(length)
    if rule.last_weekday:
        weekday = _weekday(first, length)
        days.add(length - (1 if weekday == _SATURDAY else 2 if weekday == _SUNDAY else 0))
    for day in rule.nearest:
        if day > length:
            continue  # no such day this month, so no weekday nearest it either
        weekday = _weekday(first, day)
        if weekday == _SATURDAY:
            days.add(day - 1 if day > 1 else day + 2)  # never into the previous month
        elif weekday == _SUNDAY:
            days.add(day + 1 if day < length else day - 2)  # never into the next month
        else:
            days.add(day)
    return days


def _days_of_week(rule: _DayRule, length: int, first: int) -> set[int]:
    days: set[int] = set()
    for weekday in rule.values:
        days.update(range(1 + (weekday - first) % 7, length + 1, 7))
    for weekday, week in rule.nth:
        day = 1 + (weekday - first) % 7 + 7 * (week - 1)
        if day <= length:
            days.add(day)
    for weekday in rule.last_of:
        days.add(length - (_weekday(first, length) - weekday) % 7)
    return days


class _Pattern:
    """A cron expression's fields as sorted values, matched against naive wall-clock time.

    Written here rather than taken from croniter, which drops one day field when the other uses
    L, W or # and does not know `?`; every form accepted is computed exactly, forwards and back.
    """

    __slots__ = (
        "_day_or",
        "_dom",
        "_dow",
        "_month_days",
        "_whole_minutes",
        "hours",
        "minutes",
        "months",
        "seconds",
    )

    # A few years of months: what a walk over nearby slots reuses, small enough for 16,384 cached
    # expressions; a search over decades recomputes months, each once per search anyway.
    _CACHED_MONTHS = 48

    def __init__(self, fields: list[str]) -> None:
        """Parse the fields; raise ScheduleError naming the first that is not valid."""
        self._whole_minutes = len(fields) == 5  # noqa: PLR2004 - no seconds field
        if self._whole_minutes:
            fields = ["0", *fields]
        self.seconds = _expand(fields[0], 0)
        self.minutes = _expand(fields[1], 1)
        self.hours = _expand(fields[2], 2)
        self.months = frozenset(_expand(fields[4], _MONTH))
        self._dom = _parse_day_of_month(fields[3])
        self._dow = _parse_day_of_week(fields[5])
        # Debian cron: two restricted day fields are ORed; if either starts with `*` (or is `?`)
        # they are ANDed, which leaves the other one deciding.
        self._day_or = not (self._dom.unrestricted or self._dow.unrestricted)
        self._month_days: dict[tuple[int, int], tuple[int, ...]] = {}

    def days(self, year: int, month: int) -> tuple[int, ...]:
        """Return the days of a month on which the expression fires, in order."""
        key = (year, month)
        cached = self._month_days.get(key)
        if cached is not None:
            return cached
        first, length = calendar.monthrange(year, month)
        first = (first + 1) % 7  # calendar counts from Monday, cron from Sunday
        by_month = _days_of_month(self._dom, length, first)
        by_week = _days_of_week(self._dow, length, first)
        days = tuple(sorted(by_month | by_week if self._day_or else by_month & by_week))
        if len(self._month_days) >= self._CACHED_MONTHS:
            self._month_days.clear()
        self._month_days[key] = days
        return days

    def next_after(self, wall: datetime) -> datetime | None:
        """Return the first matching wall time strictly after ``wall``, or None within 60 years."""
        try:
            if self._whole_minutes:
                start = wall.replace(second=0, microsecond=0) + _ONE_MINUTE
            else:
                start = wall.replace(microsecond=0) + _ONE_SECOND
        except OverflowError:
            return None
        year, month, day = start.year, start.month, start.day
        clock: tuple[int, int, int] | None = (start.hour, start.minute, start.second)
        stop = min(year + _MAX_YEARS_BETWEEN_MATCHES, MAXYEAR)
        first = (self.hours[0], self.minutes[0], self.seconds[0])
        while year <= stop:
            if month in self.months:
                days = self.days(year, month)
                index = bisect.bisect_left(days, day)
                if index < len(days):
                    if days[index] == day and clock is not None:
                        found = self._time_from(*clock)
                        if found is not None:
                            return datetime(year, month, day, *found)  # noqa: DTZ001 - wall time
                        index += 1
                    if index < len(days):
                        return datetime(year, month, days[index], *first)  # noqa: DTZ001 - wall time
            month, day, clock = month + 1, 1, None
            if month > 12:  # noqa: PLR2004
                year, month = year + 1, 1
        return None

    def last_at_or_before(self, wall: datetime) -> datetime | None:
        """Return the latest matching wall time at or before ``wall``, or None within 60 years."""
        year, month, day = wall.year, wall.month, wall.day
        clock: tuple[int, int, int] | None = (wall.hour, wall.minute, wall.second)
        stop = max(year - _MAX_YEARS_BETWEEN_MATCHES, MINYEAR)
        final = (self.hours[-1], self.minutes[-1], self.seconds[-1])
        while year >= stop:
            if month in self.months:
                days = self.days(year, month)
                index = bisect.bisect_right(days, day) - 1
                if index >= 0:
                    if days[index] == day and clock is not None:
                        found = self._time_until(*clock)
                        if found is not None:
                            return datetime(year, month, day, *found)  # noqa: DTZ001 - wall time
                        index -= 1
                    if index >= 0:
                        return datetime(year, month, days[index], *final)  # noqa: DTZ001 - wall time
            month, day, clock = month - 1, 31, None
            if month < 1:
                year, month = year - 1, 12
        return None

    def _time_from(self, hour: int, minute: int, second: int) -> tuple[int, int, int] | None:  # noqa: PLR0911 - one exit per case reads best
        """The first matching time of day at or after the given one."""
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        h = bisect.bisect_left(hours, hour)
        if h == len(hours):
            return None
        if hours[h] != hour:
            return hours[h], minutes[0], seconds[0]
        m = bisect.bisect_left(minutes, minute)
        if m < len(minutes):
            if minutes[m] != minute:
                return hour, minutes[m], seconds[0]
            s = bisect.bisect_left(seconds, second)
            if s < len(seconds):
                return hour, minute, seconds[s]
            if m + 1 < len(minutes):
                return hour, minutes[m + 1], seconds[0]
        if h + 1 < len(hours):
            return hours[h + 1], minutes[0], seconds[0]
        return None

    def _time_until(self, hour: int, minute: int, second: int) -> tuple[int, int, int] | None:  # noqa: PLR0911 - one exit per case reads best
        """The last matching time of day at or before the given one."""
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        h = bisect.bisect_right(hours, hour) - 1
        if h < 0:
            return None
        if hours[h] != hour:
            return hours[h], minutes[-1], seconds[-1]
        m = bisect.bisect_right(minutes, minute) - 1
        if m >= 0:
            if minutes[m] != minute:
                return hour, minutes[m], seconds[-1]
            s = bisect.bisect_right(seconds, second) - 1
            if s >= 0:
                return hour, minute, seconds[s]
            if m >= 1:
                return hour, minutes[m - 1], seconds[-1]
        if h >= 1:
            return hours[h - 1], minutes[-1], seconds[-1]
        return None


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

    def last_at_or_before(self, at: datetime, anchor: datetime) -> datetime | None:
        """Return the last anchor + k * interval (k >= 0) at or before ``at``."""
        if at < anchor:
            return None
        return anchor + (at - anchor) // self.interval * self.interval


@dataclass(frozen=True, slots=True)
class At:
    """``@at``: fire once."""

    instant: datetime

    def next_after(self, after: datetime) -> datetime | None:
        """Return the instant if it is still ahead of ``after``."""
        return self.instant if self.instant > after else None

    def last_at_or_before(self, at: datetime) -> datetime | None:
        """Return the instant if it is not after ``at``."""
        return self.instant if self.instant <= at else None


Compiled: TypeAlias = Cron | Every | At


@lru_cache(maxsize=16384)
def compile_schedule(expression: str, timezone: str) -> Compiled:
    """Parse and validate an expression in a zone; cached, so jobs sharing one share its work."""
    zone(timezone)
    _check_characters(expression)
    text = expression.strip(" \t")
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


def _check_characters(expression: str) -> None:
    """Refuse any character a schedule is not written with, naming it and where it stands."""
    found = _NOT_SCHEDULE_TEXT.search(expression)
    if found is None:
        return
    char = found.group()
    name = unicodedata.name(char, "") or (
        "a control character" if unicodedata.category(char) == "Cc" else "a character with no name"
    )
    where = f"schedule {expression!r} has U+{ord(char):04X} ({name}) at character {found.start() + 1}"
    if char.isspace():
        raise ScheduleError(f"{where}: only ASCII spaces and tabs may separate its fields")
    raise ScheduleError(f"{where}: a schedule is written in printable ASCII only")


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


def prev_fire(timing: Timing, at: datetime) -> datetime | None:
    """Return the job's latest fire time at or before ``at``, or None when it has none.

    The mirror of `next_fire` (same slots, same DST rules, same ``start_at`` and ``end_at``
    bounds), computed directly: its cost does not grow with how far back the slots lie.
    """
    compiled = compile_schedule(timing.schedule, timing.timezone)
    base = at
    if timing.end_at is not None and timing.end_at < base:
        base = timing.end_at
    if isinstance(compiled, Every):
        found = compiled.last_at_or_before(base, timing.anchor_at)
    else:
        found = compiled.last_at_or_before(base)
    if found is None or (timing.start_at is not None and found < timing.start_at):
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
