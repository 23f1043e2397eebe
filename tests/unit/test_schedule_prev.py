"""`prev_fire`, the latest slot at or before an instant, agrees with `next_fire` everywhere.

The forward direction is checked against cronsim in test_schedule.py; here the backward direction is
checked against the forward one: over random expressions (5 and 6 fields, steps, names, L, W, #, ?),
zones with DST and odd offsets, and instants close to their transitions, with forward iteration from
well before the instant as the brute-force oracle.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scheduler.domain.misfire import last_fires
from scheduler.domain.schedule import (
    Cron,
    ScheduleError,
    Timing,
    compile_schedule,
    fire_times,
    next_fire,
    prev_fire,
)

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # DST moves the clock by 30 minutes
    "Asia/Kathmandu",  # +05:45
    "America/Santiago",  # DST changes at local midnight
    "Pacific/Chatham",  # +12:45 / +13:45
]
# Instants (UTC) of 2024 DST changes in those zones: spring-forward gaps and fall-back overlaps.
TRANSITIONS = [
    datetime(2024, 3, 10, 7, tzinfo=UTC),  # New York, forward
    datetime(2024, 11, 3, 6, tzinfo=UTC),  # New York, back
    datetime(2024, 3, 31, 1, tzinfo=UTC),  # Berlin, forward
    datetime(2024, 10, 27, 1, tzinfo=UTC),  # Berlin, back
    datetime(2024, 4, 6, 15, tzinfo=UTC),  # Lord Howe, back 30 min
    datetime(2024, 10, 5, 15, 30, tzinfo=UTC),  # Lord Howe, forward 30 min
    datetime(2024, 4, 7, 3, tzinfo=UTC),  # Santiago, back
    datetime(2024, 9, 8, 4, tzinfo=UTC),  # Santiago, forward
    datetime(2024, 4, 6, 14, tzinfo=UTC),  # Chatham, back
    datetime(2024, 9, 28, 14, tzinfo=UTC),  # Chatham, forward
]
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
ORACLE_SPAN = timedelta(days=3)
ORACLE_STEPS = 5000


def _plain(draw: st.DrawFn, low: int, high: int) -> str:
    kind = draw(st.sampled_from(["star", "value", "range", "step", "list", "range_step"]))
    if kind == "star":
        return "*"
    if kind == "value":
        return str(draw(st.integers(low, high)))
    if kind == "range":
        a = draw(st.integers(low, high))
        return f"{a}-{draw(st.integers(a, high))}"
    if kind == "step":
        return f"*/{draw(st.integers(1, max(1, (high - low) // 2)))}"
    if kind == "range_step":
        a = draw(st.integers(low, high))
        return f"{a}-{draw(st.integers(a, high))}/{draw(st.integers(1, 5))}"
    return ",".join(map(str, sorted(set(draw(st.lists(st.integers(low, high), min_size=2, max_size=4))))))


def _day_of_month(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["plain", "plain", "?", "L", "LW", "W", "mixed"]))
    if kind == "plain":
        return _plain(draw, 1, 31)
    if kind == "W":
        return f"{draw(st.integers(1, 31))}W"
    if kind == "mixed":
        return f"{draw(st.integers(1, 28))},{draw(st.sampled_from(['L', 'LW', '15W', '1W', '31W']))}"
    return kind


def _day_of_week(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["plain", "plain", "name", "?", "#", "L", "mixed"]))
    day = draw(st.sampled_from(["0", "1", "2", "3", "4", "5", "6", "7", "MON", "fri", "SUN"]))
    if kind == "plain":
        return _plain(draw, 0, 7)
    if kind == "name":
        return draw(st.sampled_from(["MON", "TUE-FRI", "SAT,SUN", "mon-fri/2"]))
    if kind == "#":
        return f"{day}#{draw(st.integers(1, 5))}"
    if kind == "L":
        return f"{day}L"
    if kind == "mixed":
        return f"{day}#{draw(st.integers(1, 5))},{draw(st.integers(0, 6))}L"
    return kind


@st.composite
def expressions(draw: st.DrawFn) -> str:
    # Half the time a fixed early hour, the hours DST changes touch, where the wall-clock rules apply.
    hour = str(draw(st.integers(0, 3))) if draw(st.booleans()) else _plain(draw, 0, 23)
    fields = [
        _plain(draw, 0, 59),
        hour,
        _day_of_month(draw),
        draw(st.sampled_from(["*", "*", "JAN-JUN", "3,10,11", "*/2", "4", "2"])),
        _day_of_week(draw),
    ]
    if draw(st.booleans()):
        fields.insert(0, draw(st.sampled_from(["0", "*/15", "*", "30", "5,50", "*/7"])))
    return " ".join(fields)


@st.composite
def expressions_with_a_question_mark(draw: st.DrawFn) -> str:
    """An expression of `expressions` with `?` in its day-of-month or day-of-week field, or both.

    Made so rather than filtered out of `expressions`, where too few examples have one.
    """
    fields = draw(expressions()).split()
    if "?" not in (fields[-3], fields[-1]):
        fields[draw(st.sampled_from([-3, -1]))] = "?"
    return " ".join(fields)


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    microseconds = draw(st.sampled_from([0, 0, 1, 999_999, 500_000]))
    if draw(st.integers(0, 3)):
        base = draw(st.sampled_from(TRANSITIONS))
        return base + timedelta(seconds=draw(st.integers(-4 * 3600, 4 * 3600)), microseconds=microseconds)
    return EPOCH + timedelta(seconds=draw(st.integers(0, 3 * 365 * 86400)), microseconds=microseconds)


def compiled_or_skip(expression: str, zone: str) -> Timing:
    try:
        compile_schedule(expression, zone)
    except ScheduleError:
        assume(False)
    return Timing(expression, zone, EPOCH)


def brute_force_prev(timing: Timing, at: datetime) -> tuple[bool, datetime | None]:
    """Step forward through every slot from ORACLE_SPAN before ``at``; (decided, last slot <= at)."""
    moment = at - ORACLE_SPAN
    last: datetime | None = None
    for _ in range(ORACLE_STEPS):
        found = next_fire(timing, moment)
        if found is None or found > at:
            return last is not None, last
        last, moment = found, found
    return False, None


class TestPrevAgreesWithNext:
    """The slot before the slot after t is that slot, and no slot lies between prev(t) and next(t)."""

    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(expression=expressions(), zone=st.sampled_from(ZONES), at=instants())
    def test_prev_and_next_bracket_every_instant(self, expression, zone, at):
        timing = compiled_or_skip(expression, zone)
        after = next_fire(timing, at)
        before = prev_fire(timing, at)
        assume(after is not None or before is not None)
        if after is not None:
            assert after > at
            assert prev_fire(timing, after) == after, (expression, zone, at, after)
            assert prev_fire(timing, after - timedelta(microseconds=1)) == before
        if before is not None:
            assert before <= at
            # `before` is a slot, and the first slot after it is the first slot after `at`.
            assert next_fire(timing, before - timedelta(microseconds=1)) == before, (expression, zone, at)
            assert next_fire(timing, before) == after, (expression, zone, at, before, after)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(expression=expressions(), zone=st.sampled_from(ZONES), at=instants())
    def test_prev_is_the_last_slot_found_by_stepping_forward(self, expression, zone, at):
        timing = compiled_or_skip(expression, zone)
        decided, expected = brute_force_prev(timing, at)
        assume(decided)  # the oracle saw a slot inside its span and the step budget sufficed
        assert prev_fire(timing, at) == expected, (expression, zone, at)
        # A fresh compilation, with no walk remembered from earlier questions, answers the same.
        assert Cron(expression, zone).last_at_or_before(at) == expected

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(expression=expressions(), zone=st.sampled_from(ZONES), at=instants(), count=st.integers(1, 40))
    def test_last_fires_are_the_slots_stepping_forward_finds(self, expression, zone, at, count):
        timing = compiled_or_skip(expression, zone)
        low = at - timedelta(hours=6)
        stepped = [t for t in fire_times(timing, low - timedelta(microseconds=1), ORACLE_STEPS) if t < at]
        assume(len(stepped) < ORACLE_STEPS)
        assert last_fires(timing, low, at, count) == stepped[-count:]


class TestQuestionMark:
    """`?` in a day field means exactly what `*` does there (cronsim refuses `?`, so no oracle)."""

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(expression=expressions_with_a_question_mark(), zone=st.sampled_from(ZONES), at=instants())
    def test_question_mark_fires_where_star_does(self, expression, zone, at):
        fields = expression.split()
        starred = " ".join("*" if field == "?" else field for field in fields)
        timing = compiled_or_skip(expression, zone)
        assert fire_times(timing, at, 5) == fire_times(Timing(starred, zone, EPOCH), at, 5)
        assert prev_fire(timing, at) == prev_fire(Timing(starred, zone, EPOCH), at)


class TestPrevFireBounds:
    """`prev_fire` honours start_at and end_at, `@every` anchors and `@at`, like `next_fire`."""

    def test_every_counts_back_to_the_anchor_and_no_further(self):
        anchor = datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)
        timing = Timing("@every 1h30m", "UTC", anchor)
        assert prev_fire(timing, anchor + timedelta(hours=4)) == anchor + timedelta(hours=3)
        assert prev_fire(timing, anchor + timedelta(hours=3)) == anchor + timedelta(hours=3)
        assert prev_fire(timing, anchor) == anchor
        assert prev_fire(timing, anchor - timedelta(microseconds=1)) is None

    def test_one_time_schedule_is_its_own_previous_slot(self):
        timing = Timing("@at 2026-12-01T09:00:00+01:00", "UTC", EPOCH)
        instant = datetime(2026, 12, 1, 8, tzinfo=UTC)
        assert prev_fire(timing, instant) == instant
        assert prev_fire(timing, instant - timedelta(seconds=1)) is None

    def test_end_at_caps_and_start_at_floors(self):
        start, end = datetime(2026, 1, 1, 3, tzinfo=UTC), datetime(2026, 1, 1, 6, 30, tzinfo=UTC)
        timing = Timing("0 * * * *", "UTC", EPOCH, start_at=start, end_at=end)
        assert prev_fire(timing, datetime(2026, 1, 2, tzinfo=UTC)) == datetime(2026, 1, 1, 6, tzinfo=UTC)
        assert prev_fire(timing, start) == start
        assert prev_fire(timing, start - timedelta(microseconds=1)) is None

    def test_a_fixed_hour_in_a_repeated_hour_counts_its_first_copy_only(self):
        # 01:30 on 2024-11-03 in New York happens twice; the job fired at the first (05:30Z).
        timing = Timing("30 1 * * *", "America/New_York", EPOCH)
        second_copy = datetime(2024, 11, 3, 6, 15, tzinfo=UTC)  # 01:15 EST, after 01:30 EDT
        assert prev_fire(timing, second_copy) == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)

    def test_a_star_hour_counts_both_copies_of_a_repeated_hour(self):
        timing = Timing("30 * * * *", "America/New_York", EPOCH)
        assert prev_fire(timing, datetime(2024, 11, 3, 6, 45, tzinfo=UTC)) == datetime(
            2024, 11, 3, 6, 30, tzinfo=UTC
        )
        assert prev_fire(timing, datetime(2024, 11, 3, 6, 15, tzinfo=UTC)) == datetime(
            2024, 11, 3, 5, 30, tzinfo=UTC
        )

    def test_a_time_in_a_spring_gap_is_found_at_the_end_of_the_gap(self):
        timing = Timing("30 2 * * *", "America/New_York", EPOCH)
        # 02:30 did not exist on 2024-03-10; the job fired at 03:00 EDT (07:00Z).
        assert prev_fire(timing, datetime(2024, 3, 10, 12, tzinfo=UTC)) == datetime(
            2024, 3, 10, 7, tzinfo=UTC
        )

    def test_a_rare_schedule_is_found_years_back_in_one_step(self):
        timing = Timing("0 0 29 2 *", "Europe/Berlin", EPOCH)
        assert prev_fire(timing, datetime(2027, 6, 1, tzinfo=UTC)) == datetime(2024, 2, 28, 23, tzinfo=UTC)
