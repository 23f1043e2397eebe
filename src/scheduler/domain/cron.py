"""The cron language: fields, names and macros, ranges, steps and L/W/#, and matching wall times.

An expression has 5 fields, or 6 with a leading seconds field; the macros ``@yearly`` and friends
stand for 5-field expressions (`MACROS`, the one table of them). Fields are separated by ASCII
spaces or tabs. Month and weekday names are read in any case wherever a number may stand
(``Sun-Wed``, ``jan,Jul``, ``MON-FRI/2``, ``wed#2``, ``FRIL``).

Day fields follow Debian cron: a restricted day-of-month and a restricted day-of-week are ORed
whatever their form (``L``, ``LW``, ``15W``, ``MON#2``, ``5L`` included); when either starts with
``*`` or is ``?`` (which means "no specific value" and is allowed in those two fields only) they
are ANDed, which leaves the other field deciding. Forms with no exact meaning are refused.

A `Pattern` matches naive wall-clock time only, in both directions, computed directly from the
fields; what a wall time means in a zone is `scheduler.domain.zones`' business.
"""

from __future__ import annotations

import bisect
import calendar
import re
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, datetime, timedelta

from scheduler.domain.zones import ScheduleError

_ONE_SECOND = timedelta(seconds=1)
_ONE_MINUTE = timedelta(minutes=1)
# How far ahead a cron expression may go without a match before it is called never-firing:
# `0 0 29 2 MON` matches only every 28 years or so.
_MAX_YEARS_BETWEEN_MATCHES = 60
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""Each macro, lower case, and the 5-field expression it stands for."""
_NAMES = re.compile(r"JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|SUN|MON|TUE|WED|THU|FRI|SAT")
_FIELD_CHARS = re.compile(r"^[0-9*,/#?LW-]+$")
_FIELD_SEPARATOR = re.compile(r"[ \t]+")
_FIELD_NAMES = ("second", "minute", "hour", "day of month", "month", "day of week")


def cron_fields(expression: str) -> list[str]:
    """Split a cron expression (or a macro) into its 5 or 6 fields; ScheduleError naming a bad one."""
    text = MACROS.get(expression.strip(" \t").lower(), expression)
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


class Pattern:
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
