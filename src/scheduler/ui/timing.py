"""What a schedule means to a person: its words, its next fires and clock changes, times from now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec

from scheduler.domain import schedule
from scheduler.domain.cron import MACROS
from scheduler.domain.schedule import Cron, ScheduleError, Timing
from scheduler.domain.zones import zone_clock

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DAY_TOKENS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_MONTH_TOKENS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# Words for what the domain's macros stand for, read better than the general wording would.
_MACRO_WORDS = {
    "0 0 1 1 *": "every year on 1 January at 00:00",
    "0 0 1 * *": "on the 1st of every month at 00:00",
    "0 0 * * 0": "every Sunday at 00:00",
    "0 0 * * *": "every day at 00:00",
    "0 * * * *": "every hour, on the hour",
}
_UNITS = {"d": "day", "h": "hour", "m": "minute", "s": "second"}
_NUMBER = re.compile(r"^\d+$")
_STEP = re.compile(r"^(?:\*|0)/(\d+)$")
_RANGE = re.compile(r"^([0-9A-Z]+)-([0-9A-Z]+)$")
_ONE_US = timedelta(microseconds=1)


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" + ("" if count == 1 else "s")


def _every_words(spec: str) -> str:
    parts = re.findall(r"(\d+)([dhms])", spec.replace(" ", "").lower())
    if not parts:
        return f"every {spec}"
    if len(parts) == 1 and parts[0][0] == "1":
        return f"every {_UNITS[parts[0][1]]}"
    return "every " + " ".join(_plural(int(n), _UNITS[u]) for n, u in parts)


def _name(token: str, tokens: tuple[str, ...], names: tuple[str, ...], base: int) -> str | None:
    token = token.upper()
    if token in tokens:
        return names[tokens.index(token)]
    if _NUMBER.match(token):
        index = int(token) - base
        if token == "7" and tokens is _DAY_TOKENS:  # noqa: S105 - cron's second Sunday
            index = 0
        if 0 <= index < len(names):
            return names[index]
    return None


def _list_words(field: str, tokens: tuple[str, ...], names: tuple[str, ...], base: int) -> str | None:
    words: list[str] = []
    for item in field.split(","):
        ranged = _RANGE.match(item.upper())
        if ranged:
            low = _name(ranged.group(1), tokens, names, base)
            high = _name(ranged.group(2), tokens, names, base)
            if low is None or high is None:
                return None
            words.append(f"{low} to {high}")
            continue
        named = _name(item, tokens, names, base)
        if named is None:
            return None
        words.append(named)
    return ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")  # noqa: PLR2004
    return f"{day}{suffix}"


def _time_words(second: str, minute: str, hour: str) -> str | None:  # noqa: PLR0911 - one case each
    step = _STEP.match(minute)
    if second != "0" and hour == "*" and minute == "*":
        every = _STEP.match(second)
        return f"every {_plural(int(every.group(1)), 'second')}" if every else None
    if second != "0":
        return None
    if minute == "*" and hour == "*":
        return "every minute"
    if step and hour == "*":
        return f"every {_plural(int(step.group(1)), 'minute')}"
    if _NUMBER.match(minute) and hour == "*":
        return "every hour, on the hour" if minute == "0" else f"every hour at minute {int(minute)}"
    if _NUMBER.match(minute) and all(_NUMBER.match(h) for h in hour.split(",")):
        return "at " + ", ".join(f"{int(h):02d}:{int(minute):02d}" for h in hour.split(","))
    if _NUMBER.match(minute) and _RANGE.match(hour):
        low, high = hour.split("-")
        return f"at minute {int(minute)} of every hour from {int(low):02d}:00 to {int(high):02d}:59"
    if step and _RANGE.match(hour):
        low, high = hour.split("-")
        return f"every {_plural(int(step.group(1)), 'minute')} from {int(low):02d}:00 to {int(high):02d}:59"
    return None


def _day_words(dom: str, month: str, dow: str) -> str | None:
    parts: list[str] = []
    dom_any, dow_any = dom in ("*", "?"), dow in ("*", "?")
    if dom_any and dow_any:
        parts.append("every day")
    else:
        days: list[str] = []
        if not dom_any:
            if dom == "L":
                days.append("on the last day of the month")
            elif all(_NUMBER.match(d) for d in dom.split(",")):
                days.append("on the " + ", ".join(_ordinal(int(d)) for d in dom.split(",")))
            else:
                return None
        if not dow_any:
            named = _list_words(dow, _DAY_TOKENS, _DAYS, 0)
            if named is None:
                return None
            days.append(f"on {named}")
        parts.append(" or ".join(days))
    if month != "*":
        named_month = _list_words(month, _MONTH_TOKENS, _MONTHS, 1)
        if named_month is None:
            return None
        parts.append(f"in {named_month}")
    return " ".join(parts)


def describe(expression: str) -> str:  # noqa: PLR0911 - one return per kind of schedule
    """The schedule in plain words ("at 09:00 on Monday"); the expression itself when too unusual."""
    text = expression.strip()
    lowered = text.lower()
    if lowered.startswith("@every"):
        return _every_words(text[len("@every") :].strip())
    if lowered.startswith("@at"):
        return "once, at " + text[len("@at") :].strip()
    expanded = MACROS.get(lowered)
    if expanded is not None and expanded in _MACRO_WORDS:
        return _MACRO_WORDS[expanded]
    fields = (expanded or text).split()
    if len(fields) == 5:  # noqa: PLR2004 - minute hour day month weekday
        fields = ["0", *fields]
    if len(fields) != 6:  # noqa: PLR2004 - with a seconds field
        return text
    second, minute, hour, dom, month, dow = fields
    at = _time_words(second, minute, hour)
    days = _day_words(dom, month, dow)
    if at is None or days is None:
        return text
    if days == "every day" and at.startswith("every"):
        return at
    return f"{at}, {days}" if at.startswith("every") else f"{at} {days}"


class Fire(msgspec.Struct, frozen=True):
    """One upcoming fire time, with a note when daylight saving time moves or repeats it."""

    at: datetime
    local: datetime
    note: str | None


class ClockChange(msgspec.Struct, frozen=True):
    """A change of the zone's clocks ahead, in words, with what it does to this job's fires."""

    at: datetime
    """The instant (UTC) the new offset starts."""
    summary: str
    """e.g. "Sunday 28 March 2027, 02:00 CET: clocks go forward 1 h, to 03:00 CEST"."""
    notes: list[str]
    """The job's fires that the change moves or repeats, as the fire table words them."""
    next_fire: datetime | None
    """The job's first fire from the change on (at it, for a slot the gap moved), when it has one."""


def _wall(moment: datetime) -> str:
    return f"{moment:%H:%M}" if moment.second == 0 else f"{moment:%H:%M:%S}"


def _day(moment: datetime) -> str:
    return f"{moment.day} {_MONTHS[moment.month - 1]}"


def _gap_note(compiled: Cron, fire_local: datetime) -> str | None:
    """The note of a fire at the first instant after a spring-forward gap, if a slot fell inside it."""
    zone = fire_local.tzinfo
    before = (fire_local.astimezone(UTC) - _ONE_US).astimezone(zone)
    if before.utcoffset() == fire_local.utcoffset():
        return None  # not at a transition
    gap_start = before.replace(tzinfo=None) + _ONE_US
    gap_end = fire_local.replace(tzinfo=None)
    if gap_end <= gap_start:
        return None  # a fall-back transition
    # The same fields on a clock without DST say which wall time the schedule asked for.
    plain = Cron(compiled.expression, "UTC").next_after(gap_start.replace(tzinfo=UTC) - _ONE_US)
    if plain is None or plain.replace(tzinfo=None) >= gap_end:
        return None
    return (
        f"{_wall(plain)} does not exist on {_day(fire_local)}: "
        f"fires at {_wall(fire_local)} {fire_local.tzname()}"
    )


def _overlap_note(fire_local: datetime) -> str | None:
    """The note of a fire at a wall time that a fall-back transition repeats."""
    other = fire_local.replace(fold=1 - fire_local.fold)
    if other.utcoffset() == fire_local.utcoffset():
        return None
    first, second = sorted((fire_local, other), key=lambda moment: moment.astimezone(UTC))
    which = "first" if fire_local.fold == 0 else "second"
    return (
        f"{_wall(fire_local)} happens twice on {_day(fire_local)} "
        f"({first.tzname()}, then {second.tzname()}): this is the {which}, {fire_local.tzname()}"
    )


def _cron_of(timing: Timing) -> Cron | None:
    """The job's schedule compiled when it is a cron expression (the only kind DST notes concern)."""
    try:
        compiled = schedule.compile_schedule(timing.schedule, timing.timezone)
    except (ScheduleError, OverflowError):
        return None
    return compiled if isinstance(compiled, Cron) else None


def _note(cron: Cron | None, local: datetime) -> str | None:
    return None if cron is None else _gap_note(cron, local) or _overlap_note(local)


def _entries(timing: Timing) -> list[Timing]:
    """Each schedule entry of the job as a timing of its own (the job itself when it has one)."""
    if not timing.entries:
        return [timing]
    return [
        Timing(entry.schedule, entry.timezone, entry.anchor_at, entry.start_at, entry.end_at)
        for entry in timing.entries
    ]


def upcoming(timing: Timing, now: datetime, count: int = 10) -> list[Fire]:
    """The next ``count`` fire times, each in the zone of the entry it comes from, with its DST note."""
    entries = _entries(timing)
    try:
        found = schedule.fire_times_from(timing, now, count)
        zones = [schedule.zone(entry.timezone) for entry in entries]
    except (ScheduleError, OverflowError):
        return []
    crons = [_cron_of(entry) for entry in entries]
    fires = []
    for moment, sources in found:
        source = sources[0] if sources else 0
        local = moment.astimezone(zones[source])
        fires.append(Fire(at=moment, local=local, note=_note(crons[source], local)))
    return fires


# How far ahead clock changes are looked for: a year holds both of a DST zone's changes.
HORIZON = timedelta(days=366)
# Fires looked at in a repeated hour: a job firing every minute has sixty there; the first few say it.
_FIRES_PER_CHANGE = 4


def _amount(step: timedelta) -> str:
    minutes = round(abs(step.total_seconds()) / 60)
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h" + (f" {rest} min" if rest else "")


def _summary(zone: ZoneInfo, at: datetime) -> str:
    """The change at ``at`` in words: the day, the wall time it happens at, and what the clocks do."""
    before = (at - _ONE_US).astimezone(zone)
    after = at.astimezone(zone)
    step = (after.utcoffset() or timedelta(0)) - (before.utcoffset() or timedelta(0))
    wall_before = at.replace(tzinfo=None) + (before.utcoffset() or timedelta(0))
    weekday = _DAYS[after.isoweekday() % 7]
    direction = "forward" if step > timedelta(0) else "back"
    return (
        f"{weekday} {_day(after)} {after.year}, {_wall(wall_before)} {before.tzname()}: "
        f"clocks go {direction} {_amount(step)}, to {_wall(after)} {after.tzname()}"
    )


def _change_notes(timing: Timing, cron: Cron, zone: ZoneInfo, at: datetime) -> list[str]:
    """The notes of the job's fires that the change at ``at`` moves (a gap) or repeats (an overlap)."""
    step = (at.astimezone(zone).utcoffset() or timedelta(0)) - (
        (at - _ONE_US).astimezone(zone).utcoffset() or timedelta(0)
    )
    if step > timedelta(0):
        # A slot in the gap fires at its end, the change itself.
        fires = [moment for moment in schedule.fire_times(timing, at - _ONE_US, 1) if moment == at]
    else:
        # The repeated wall times: the first copy just before the change, the second just after.
        fires = [
            moment
            for moment in schedule.fire_times(timing, at + step - _ONE_US, _FIRES_PER_CHANGE)
            if moment < at - step
        ]
    return [note for moment in fires if (note := _note(cron, moment.astimezone(zone)))]


def clock_changes(timing: Timing, now: datetime, horizon: timedelta = HORIZON) -> list[ClockChange]:
    """The changes of the job's zone's clocks in the next ``horizon`` (a year), each with its notes.

    Looked up over the zone's transitions, not over the next few fires: a daily job seen in
    December learns of the March change, and whether one of its slots falls in the gap.
    """
    by_zone: dict[str, list[Timing]] = {}
    for entry in _entries(timing):  # a job of several entries: each entry's zone, once
        by_zone.setdefault(entry.timezone, []).append(entry)
    changes = []
    for name, members in by_zone.items():
        try:
            clock = zone_clock(name)
        except ScheduleError:
            continue
        for at in clock.transitions_between(now, now + horizon):
            notes: list[str] = []
            try:
                for entry in members:
                    cron = _cron_of(entry)
                    if cron is not None:
                        notes += _change_notes(entry, cron, clock.tz, at)
                following = schedule.fire_times(timing, at - _ONE_US, 1)
            except (ScheduleError, OverflowError):
                notes, following = [], []
            changes.append(
                ClockChange(
                    at=at,
                    summary=_summary(clock.tz, at),
                    notes=notes,
                    next_fire=following[0] if following else None,
                )
            )
    changes.sort(key=lambda change: change.at)
    return changes


# --------------------------------------------------------------------------- times for people


def relative(moment: datetime | None, now: datetime) -> str:
    """``moment`` from ``now`` as a person says it: "in 4 min", "3 h ago", "now"; a date when far off."""
    if moment is None:
        return "—"
    seconds = (moment - now).total_seconds()
    ahead = seconds > 0
    span = abs(seconds)
    if span < 1:
        return "now"
    if span < 60:  # noqa: PLR2004 - a minute
        amount = f"{span:.0f} s"
    elif span < 90 * 60:
        amount = f"{span / 60:.0f} min"
    elif span < 36 * 3600:
        amount = f"{span / 3600:.0f} h"
    elif span < 45 * 86400:
        amount = f"{span / 86400:.0f} d"
    else:
        return f"{moment.astimezone(UTC):%Y-%m-%d}"
    return f"in {amount}" if ahead else f"{amount} ago"
