"""Time zones: IANA zones from the shipped tzdata, their transitions, and wall-clock arithmetic.

Zones are read from the ``tzdata`` package the service ships, never from the host's zone files, so
the API and every runner agree on each zone whatever host they run on; names that mean "whatever
this host is set to" are refused. A `ZoneClock` finds a zone's transitions (by sampling its offset
day by day and bisecting) and answers what the schedules ask of them: the offset in force at an
instant and when it next changes, the instant a wall time stands for (its first occurrence when a
fall-back repeats it, the end of the gap when a spring-forward skips it), and the highest reading
the wall clock has shown up to an instant.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, UTC, datetime, timedelta
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo

_ONE_US = timedelta(microseconds=1)
# The furthest any zone has set its clocks back at once, with room to spare: a wall time up to this
# far past the current reading may have occurred already.
_LONGEST_SET_BACK = timedelta(days=2)
# Names a zone database may carry that mean "whatever this host is set to" or nothing at all.
_HOST_DEPENDENT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


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


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    """The zone names of the tzdata package: plain names, no paths, nothing host-dependent."""
    listed = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return frozenset(listed) - _HOST_DEPENDENT_ZONES


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of time over which a zone's UTC offset does not change."""

    offset: timedelta
    end: datetime | None  # the next transition (UTC), None when none is known ahead


class ZoneClock:
    """The transitions of one zone, found by sampling its offset day by day and bisecting.

    Not thread-safe, like the compiled schedules that share it: each process uses it from its own
    event loop thread.
    """

    # Years scanned ahead of an instant before concluding the zone has no further transition.
    _HORIZON_YEARS = 12

    def __init__(self, tz: ZoneInfo) -> None:
        """Start with no year scanned: transitions are found as instants ask about them."""
        self._tz = tz
        self._scanned: set[int] = set()
        self._transitions: list[datetime] = []  # sorted UTC instants where the offset changes
        # The last segment looked up, as (low, high, segment, start): every instant in [low, high)
        # has that segment and that start. Consecutive fire times nearly always share one.
        self._memo: tuple[datetime, datetime, Segment, datetime] | None = None

    @property
    def tz(self) -> ZoneInfo:
        """The zone itself."""
        return self._tz

    def offset_at(self, instant: datetime) -> timedelta:
        """The zone's UTC offset at ``instant``."""
        offset = instant.astimezone(self._tz).utcoffset()
        return offset if offset is not None else timedelta(0)

    def segment_at(self, instant: datetime) -> Segment:
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

    def resolve_wall(self, wall: datetime) -> datetime:
        """The instant (UTC) a naive wall time stands for in this zone.

        A wall time a fall-back repeats stands for its first occurrence; one inside a
        spring-forward gap for the first instant after the gap, the transition itself.
        """
        tz = self._tz
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if first.astimezone(tz).replace(tzinfo=None) == wall:
            return first  # a real wall time; its first occurrence when repeated
        earliest = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        return self.transition_after(min(earliest, first))

    def highest_wall_reading(self, at: datetime) -> datetime:
        """The highest (naive) reading the wall clock has shown up to ``at``.

        It lies after the reading at ``at`` itself when the clock was set back since: the first
        copy of a repeated hour came earlier, and a wall time up to that reading may have occurred.
        """
        tz = self._tz
        ceiling = at.astimezone(tz).replace(tzinfo=None)
        for transition in self.transitions_between(at - _LONGEST_SET_BACK, at):
            before = (transition - _ONE_US).astimezone(tz).replace(tzinfo=None)
            ceiling = max(ceiling, before)
        return ceiling

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

    def _remember(self, instant: datetime) -> tuple[datetime, datetime, Segment, datetime]:
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

    def _find_segment(self, instant: datetime) -> Segment:
        index = bisect.bisect_right(self._transitions, instant)
        for year in range(instant.year, min(instant.year + self._HORIZON_YEARS, MAXYEAR)):
            if year not in self._scanned:
                self._scan_year(year)
                index = bisect.bisect_right(self._transitions, instant)
            # Years are scanned lazily and out of order: only a transition inside a year scanned
            # in this walk (or before it) may end the segment.
            if index < len(self._transitions) and self._transitions[index].year <= year:
                return Segment(self.offset_at(instant), self._transitions[index])
        return Segment(self.offset_at(instant), None)

    def _find_start(self, instant: datetime) -> datetime:
        lowest = max(instant.year - self._HORIZON_YEARS, MINYEAR + 1)
        for year in range(instant.year, lowest - 1, -1):
            self._scan_year(year)
            index = bisect.bisect_right(self._transitions, instant)
            # As in segment_at: only a transition inside a year scanned in this walk counts.
            if index and self._transitions[index - 1].year >= year:
                return self._transitions[index - 1]
        return datetime(lowest, 1, 1, tzinfo=UTC)

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
def zone_clock(name: str) -> ZoneClock:
    """The clock of the zone ``name``, shared by every schedule in that zone."""
    return ZoneClock(zone(name))
