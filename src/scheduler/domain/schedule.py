"""Schedules: the three kinds of expression, compiled, and a job's fire times before and after an instant.

Three kinds of expression are understood:

* cron, 5 fields or 6 with a leading seconds field, plus the macros ``@yearly`` and friends (the
  language itself is `scheduler.domain.cron`);
* ``@every 1h30m``: fixed intervals counted from an anchor (``start_at`` or the job's creation);
* ``@at 2026-12-01T09:00:00Z``: one instant.

A schedule is printable ASCII, its fields separated by ASCII spaces or tabs; any other character
(U+00A0, U+3000, a line feed ...) is refused with a message naming it, never read as a separator.

Cron time zones follow Debian cron, as ``cronsim`` does: an expression with a fixed minute and hour
(5 fields, neither starting with ``*``) is matched on the wall clock; a wall time inside a
spring-forward gap fires once at the first instant after the gap, and a wall time repeated by a
fall-back fires at its first occurrence only. Every other expression is matched against the real
passage of time, so an hourly job fires in both copies of a repeated hour and skips the hour that
does not exist. The zones and their transitions are `scheduler.domain.zones`.

Fire times are always computed from the previous *scheduled* time, never from when a run finished.
Parsing an expression costs tens of µs, so compiled schedules are cached per (expression, zone), and
each keeps the fire times it found lately, forwards and backwards, for jobs sharing the expression.
Both directions are computed directly from the fields, so finding the slot before or after any
instant costs the same few µs however far the neighbouring slots lie.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass
from datetime import MINYEAR, UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol, TypeAlias
from uuid import UUID

import msgspec

from scheduler.domain import exclusions as exclusion_rules
from scheduler.domain.cron import MACROS, Pattern, cron_fields
from scheduler.domain.exclusions import Exclusions
from scheduler.domain.zones import ScheduleError, zone, zone_clock

# What other modules import from here, the zone and the error among them: one module to import.
__all__ = [
    "MAX_ENTRIES",
    "MAX_INTERVAL",
    "At",
    "Compiled",
    "Cron",
    "Entry",
    "Every",
    "Exclusions",
    "ScheduleError",
    "Timing",
    "TimingFields",
    "compile_schedule",
    "fire_times",
    "fire_times_from",
    "next_fire",
    "next_fire_from",
    "prev_fire",
    "validate",
    "zone",
]

_ONE_US = timedelta(microseconds=1)
_WINDOW = 32  # upcoming fire times kept per compiled expression
# Past fire times kept per compiled expression: room for a catch-up of every missed slot (at most
# 100) that the jobs sharing the expression then reuse.
_BACK_WINDOW = 128
# What a schedule may contain: printable ASCII and tabs. str.split() would take U+00A0 or U+3000
# for a separator and str.upper() turns U+017F into S, so anything else would be read as something
# its author did not type.
_NOT_SCHEDULE_TEXT = re.compile(r"[^\t -~]")
_INTERVAL = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MAX_INTERVAL = timedelta(days=3660)
MAX_ENTRIES = 20


class Cron:
    """A compiled cron expression in one zone, with a window of upcoming fire times.

    Not thread-safe: each process (API worker, runner) uses it from its own event loop thread.
    """

    def __init__(self, expression: str, timezone: str) -> None:
        """Validate and compile; raise ScheduleError naming what is wrong."""
        fields = cron_fields(expression)
        self.expression = expression
        self.timezone = timezone
        self._clock = zone_clock(timezone)
        self._pattern = Pattern(fields)
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
        window = self._window
        start = self._window_start
        # Aware datetimes compare by instant whatever their zone: a hit (most fires) needs no
        # conversion, which costs more than the lookup (the database hands out Etc/UTC datetimes).
        if start is not None and start <= after and window and after < window[-1]:
            return window[bisect.bisect_right(window, after)]
        if after.tzinfo is not UTC:
            after = after.astimezone(UTC)
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
            instant = self._clock.resolve_wall(found)
            if instant > after:
                return instant
            wall = found

    def _last_on_wall_clock(self, at: datetime) -> datetime | None:
        # Resolving wall times to instants never reverses their order, so the latest wall time
        # that resolves at or before `at` gives the answer. Such a wall time can lie after the
        # wall clock's reading at `at` when the clock was set back since, so the search starts
        # from the highest reading the wall clock has shown up to `at`.
        wall = self._clock.highest_wall_reading(at)
        while True:
            found = self._pattern.last_at_or_before(wall)
            if found is None:
                return None
            instant = self._clock.resolve_wall(found)
            if instant <= at:
                return instant
            wall = found - _ONE_US


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
    if lowered.startswith("@") and lowered not in MACROS:
        raise ScheduleError(
            f"unknown schedule macro {text.split()[0]!r}; use one of "
            + ", ".join(sorted(MACROS))
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


class TimingFields(Protocol):
    """What a job (or its values, or a row) holds that decides when it fires."""

    @property
    def schedule(self) -> str:
        """The expression."""
        ...

    @property
    def timezone(self) -> str:
        """The IANA zone a cron expression is read in."""
        ...

    @property
    def anchor_at(self) -> datetime:
        """Where `@every` counts from."""
        ...

    @property
    def start_at(self) -> datetime | None:
        """No fire before it."""
        ...

    @property
    def end_at(self) -> datetime | None:
        """No fire after it."""
        ...

    @property
    def schedules(self) -> tuple[Entry, ...]:
        """Every schedule entry when there are several, else empty."""
        ...

    @property
    def exclusions(self) -> Exclusions | None:
        """When the job does not fire."""
        ...


class _Bounds(Protocol):
    """One schedule entry's expression, zone, anchor and bounds."""

    @property
    def schedule(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def anchor_at(self) -> datetime: ...
    @property
    def start_at(self) -> datetime | None: ...
    @property
    def end_at(self) -> datetime | None: ...


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One schedule entry of a job that has several: its own expression, zone, bounds and pause."""

    schedule: str
    timezone: str
    anchor_at: datetime
    start_at: datetime | None = None
    end_at: datetime | None = None
    paused: bool = False
    id: UUID | None = None


class Timing(msgspec.Struct, frozen=True):
    """Everything that decides when a job fires (a Struct: the runner builds one per fire).

    A job with one schedule entry holds it in the five fields. A job with several lists them all in
    ``entries`` (the five fields then repeat the first, for readers that know only one) and fires
    at the union of their times, one fire per instant. ``exclusions`` take fires away from either.
    """

    schedule: str
    timezone: str
    anchor_at: datetime
    start_at: datetime | None = None
    end_at: datetime | None = None
    entries: tuple[Entry, ...] = ()
    exclusions: Exclusions | None = None

    @classmethod
    def of(cls, values: TimingFields) -> Timing:
        """The timing of a job, its values or anything else holding the timing fields."""
        return cls(
            values.schedule,
            values.timezone,
            values.anchor_at,
            values.start_at,
            values.end_at,
            values.schedules,
            values.exclusions,
        )

    @property
    def single(self) -> bool:
        """Whether the five fields alone decide (one entry, no exclusions): the runner's usual case."""
        return not self.entries and self.exclusions is None


def _next_one(entry: _Bounds, after: datetime) -> datetime | None:
    compiled = compile_schedule(entry.schedule, entry.timezone)
    base = after
    if entry.start_at is not None and entry.start_at > base:
        base = entry.start_at - _ONE_US
    if isinstance(compiled, Every):
        found: datetime | None = compiled.next_after(base, entry.anchor_at)
    else:
        found = compiled.next_after(base)
    if found is None or (entry.end_at is not None and found > entry.end_at):
        return None
    return found


def _prev_one(entry: _Bounds, at: datetime) -> datetime | None:
    compiled = compile_schedule(entry.schedule, entry.timezone)
    base = at
    if entry.end_at is not None and entry.end_at < base:
        base = entry.end_at
    if isinstance(compiled, Every):
        found = compiled.last_at_or_before(base, entry.anchor_at)
    else:
        found = compiled.last_at_or_before(base)
    if found is None or (entry.start_at is not None and found < entry.start_at):
        return None
    return found


def _active(timing: Timing) -> tuple[_Bounds, ...]:
    if not timing.entries:
        return (timing,)
    return tuple(entry for entry in timing.entries if not entry.paused)


def next_fire(timing: Timing, after: datetime) -> datetime | None:
    """Return the job's first fire time strictly after ``after``, or None when it has no more.

    Honors each entry's ``start_at`` (first fire at or after it) and ``end_at`` (no fire after it),
    and the exclusions.
    """
    if not timing.entries and timing.exclusions is None:  # `single`, inlined: once per fire
        return _next_one(timing, after)
    found = next_fire_from(timing, after)
    return None if found is None else found[0]


def next_fire_from(timing: Timing, after: datetime) -> tuple[datetime, tuple[int, ...]] | None:
    """Return the first fire time after ``after`` and the indexes of the entries firing at it.

    Entries due at the same instant make one fire. An excluded fire moves the search past the
    excluded span it falls in, so the cost is set by the exclusions, not by the schedule.
    """
    entries = _active(timing)
    moment = after
    for _ in range(exclusion_rules.MAX_SKIPS + 1):
        best: datetime | None = None
        sources: list[int] = []
        for index, entry in enumerate(entries):
            found = _next_one(entry, moment)
            if found is None:
                continue
            if best is None or found < best:
                best, sources = found, [index]
            elif found == best:
                sources.append(index)
        if best is None:
            return None
        span = None if timing.exclusions is None else exclusion_rules.excluded_span(timing.exclusions, best)
        if span is None:
            return best, _original_indexes(timing, sources)
        moment = span[1] - _ONE_US
    return None


def _original_indexes(timing: Timing, sources: list[int]) -> tuple[int, ...]:
    """Indexes among all entries (paused ones included) of indexes among the active ones."""
    if not timing.entries or all(not entry.paused for entry in timing.entries):
        return tuple(sources)
    active = [index for index, entry in enumerate(timing.entries) if not entry.paused]
    return tuple(active[index] for index in sources)


def prev_fire(timing: Timing, at: datetime) -> datetime | None:
    """Return the job's latest fire time at or before ``at``, or None when it has none.

    The mirror of `next_fire` (same slots, same DST rules, same bounds and exclusions), computed
    directly: its cost does not grow with how far back the slots lie.
    """
    if timing.single:
        return _prev_one(timing, at)
    entries = _active(timing)
    moment = at
    for _ in range(exclusion_rules.MAX_SKIPS + 1):
        best: datetime | None = None
        for entry in entries:
            found = _prev_one(entry, moment)
            if found is not None and (best is None or found > best):
                best = found
        if best is None:
            return None
        span = None if timing.exclusions is None else exclusion_rules.excluded_span(timing.exclusions, best)
        if span is None:
            return best
        moment = span[0] - _ONE_US
    return None


def fire_times(timing: Timing, after: datetime, count: int) -> list[datetime]:
    """Return up to ``count`` consecutive fire times after ``after``."""
    return [moment for moment, _ in fire_times_from(timing, after, count)]


def fire_times_from(timing: Timing, after: datetime, count: int) -> list[tuple[datetime, tuple[int, ...]]]:
    """Return up to ``count`` consecutive fire times after ``after``, each with its entries' indexes."""
    times: list[tuple[datetime, tuple[int, ...]]] = []
    moment = after
    while len(times) < count:
        found = next_fire_from(timing, moment)
        if found is None:
            break
        times.append(found)
        moment = found[0]
    return times


def validate(timing: Timing, now: datetime) -> datetime:
    """Check that the job will fire at least once after ``now``; return that first fire time."""
    if timing.entries:
        return _validate_entries(timing, now)
    if timing.end_at is not None and timing.start_at is not None and timing.end_at <= timing.start_at:
        raise ScheduleError("must be after start_at", field="end_at")
    if timing.exclusions is not None:
        exclusion_rules.check(timing.exclusions)
    first = next_fire(timing, now)
    if first is None:
        compiled = compile_schedule(timing.schedule, timing.timezone)
        if isinstance(compiled, At):
            raise ScheduleError("the @at time has passed; the job would never fire")
        bare = msgspec.structs.replace(timing, end_at=None, exclusions=None)
        if timing.end_at is not None and next_fire(bare, now):
            raise ScheduleError("the schedule has no fire time before end_at", field="end_at")
        if timing.exclusions is not None and next_fire(msgspec.structs.replace(timing, exclusions=None), now):
            raise ScheduleError("the exclusions leave no fire time", field="exclusions")
        raise ScheduleError(f"schedule {timing.schedule!r} never fires")
    return first


def _validate_entries(timing: Timing, now: datetime) -> datetime:
    if len(timing.entries) > MAX_ENTRIES:
        raise ScheduleError(f"a job holds at most {MAX_ENTRIES} schedule entries", field="schedules")
    for index, entry in enumerate(timing.entries):
        where = f"schedules[{index}]"
        try:
            compile_schedule(entry.schedule, entry.timezone)
        except ScheduleError as exc:
            field = "timezone" if exc.field == "timezone" else "schedule"
            raise ScheduleError(str(exc), field=f"{where}.{field}") from None
        if entry.end_at is not None and entry.start_at is not None and entry.end_at <= entry.start_at:
            raise ScheduleError("must be after start_at", field=f"{where}.end_at")
    if all(entry.paused for entry in timing.entries):
        raise ScheduleError("every schedule entry is paused; pause the job instead", field="schedules")
    if timing.exclusions is not None:
        exclusion_rules.check(timing.exclusions)
    first = next_fire(timing, now)
    if first is None:
        if timing.exclusions is not None and next_fire(msgspec.structs.replace(timing, exclusions=None), now):
            raise ScheduleError("the exclusions leave no fire time", field="exclusions")
        raise ScheduleError("no schedule entry fires again", field="schedules")
    return first
