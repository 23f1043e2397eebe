"""Several schedule entries per job, and exclusions.

A job fires at the union of its entries' fire times, one fire per instant, minus the excluded dates
and calendars, across DST changes, both ways.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.exclusions import Exclusions, excluded_span
from scheduler.domain.misfire import plan
from scheduler.domain.models import Misfire, MisfirePolicy, RunTrigger
from scheduler.domain.schedule import (
    Entry,
    ScheduleError,
    Timing,
    fire_times,
    fire_times_from,
    next_fire,
    prev_fire,
    validate,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def entry(schedule: str, zone: str = "UTC", **extra: object) -> Entry:
    return Entry(schedule=schedule, timezone=zone, anchor_at=ANCHOR, **extra)  # type: ignore[arg-type]


def several(*entries: Entry, exclusions: Exclusions | None = None) -> Timing:
    first = entries[0]
    return Timing(
        first.schedule,
        first.timezone,
        first.anchor_at,
        first.start_at,
        first.end_at,
        entries=entries,
        exclusions=exclusions,
    )


def local(times: list[datetime], zone: ZoneInfo) -> list[str]:
    return [moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %z") for moment in times]


class TestUnion:
    """A job fires at the union of its entries' times, each instant once."""

    def test_weekdays_at_nine_and_saturdays_at_noon_across_the_spring_change_in_berlin(self):
        timing = several(
            entry("0 9 * * MON-FRI", "Europe/Berlin"),
            entry("0 12 * * SAT", "Europe/Berlin"),
            exclusions=Exclusions(dates=(date(2027, 3, 29),), timezone="Europe/Berlin"),
        )
        start = datetime(2027, 3, 25, tzinfo=UTC)
        assert local(fire_times(timing, start, 6), BERLIN) == [
            "Thu 2027-03-25 09:00 +0100",
            "Fri 2027-03-26 09:00 +0100",
            "Sat 2027-03-27 12:00 +0100",
            # Sunday 28 March the clocks go forward; Monday 29 March is excluded.
            "Tue 2027-03-30 09:00 +0200",
            "Wed 2027-03-31 09:00 +0200",
            "Thu 2027-04-01 09:00 +0200",
        ]

    def test_entries_due_at_one_instant_make_one_fire_across_the_fall_change_in_new_york(self):
        timing = several(
            entry("0 9 * * *", "America/New_York"),
            entry("0 9 * * 1-5", "America/New_York"),
            exclusions=Exclusions(dates=(date(2027, 11, 8),), timezone="America/New_York"),
        )
        start = datetime(2027, 11, 5, tzinfo=UTC)  # Friday; the clocks go back on Sunday 7 November
        found = fire_times_from(timing, start, 4)
        assert local([moment for moment, _ in found], NEW_YORK) == [
            "Fri 2027-11-05 09:00 -0400",
            "Sat 2027-11-06 09:00 -0400",
            "Sun 2027-11-07 09:00 -0500",
            # Monday 8 November is excluded.
            "Tue 2027-11-09 09:00 -0500",
        ]
        assert [sources for _, sources in found] == [(0, 1), (0,), (0,), (0, 1)]

    def test_a_repeated_hour_fires_once_per_instant_for_two_entries_in_new_york(self):
        # Both entries match 01:30 on the night the clocks go back; the wall-clock one fires at the
        # first 01:30 only, the real-time one in both copies of the hour: three fires, not four.
        timing = several(entry("30 1 * * *", "America/New_York"), entry("30 * * * *", "America/New_York"))
        start = datetime(2027, 11, 7, 4, 0, tzinfo=UTC)  # 00:00 EDT
        found = fire_times_from(timing, start, 3)
        assert local([moment for moment, _ in found], NEW_YORK) == [
            "Sun 2027-11-07 00:30 -0400",
            "Sun 2027-11-07 01:30 -0400",
            "Sun 2027-11-07 01:30 -0500",
        ]
        assert [sources for _, sources in found] == [(1,), (0, 1), (1,)]

    def test_a_paused_entry_adds_nothing_and_the_indexes_count_it(self):
        timing = several(entry("0 9 * * *", paused=True), entry("0 12 * * *"))
        found = fire_times_from(timing, datetime(2027, 1, 1, tzinfo=UTC), 2)
        assert [(moment.hour, sources) for moment, sources in found] == [(12, (1,)), (12, (1,))]

    def test_each_entry_keeps_its_own_bounds_and_zone(self):
        timing = several(
            entry("0 8 * * *", "Europe/Berlin", end_at=datetime(2027, 1, 2, 12, tzinfo=UTC)),
            entry("0 8 * * *", "America/New_York", start_at=datetime(2027, 1, 2, tzinfo=UTC)),
        )
        assert [moment.isoformat() for moment in fire_times(timing, datetime(2027, 1, 1, tzinfo=UTC), 4)] == [
            "2027-01-01T07:00:00+00:00",
            "2027-01-02T07:00:00+00:00",
            "2027-01-02T13:00:00+00:00",
            "2027-01-03T13:00:00+00:00",
        ]

    def test_every_and_cron_entries_mix(self):
        timing = several(entry("@every 45m"), entry("0 * * * *"))
        times = fire_times(timing, ANCHOR, 5)
        assert [moment.strftime("%H:%M") for moment in times] == ["00:45", "01:00", "01:30", "02:00", "02:15"]


class TestExclusions:
    """Excluded dates and calendars take fires away, at a cost set by the exclusions."""

    def test_a_weekend_calendar_skips_an_every_second_job_to_monday(self):
        timing = Timing("* * * * * *", "UTC", ANCHOR, exclusions=Exclusions(calendars=("* * * * SAT,SUN",)))
        friday_night = datetime(2027, 1, 1, 23, 59, 59, tzinfo=UTC)  # a Friday
        assert next_fire(timing, friday_night) == datetime(2027, 1, 4, tzinfo=UTC)
        assert prev_fire(timing, datetime(2027, 1, 3, 12, tzinfo=UTC)) == friday_night

    def test_a_night_calendar_and_a_holiday_in_berlin(self):
        timing = Timing(
            "0 * * * *",
            "Europe/Berlin",
            ANCHOR,
            exclusions=Exclusions(
                dates=(date(2026, 12, 25),), calendars=("* 0-6 * * *",), timezone="Europe/Berlin"
            ),
        )
        times = fire_times(timing, datetime(2026, 12, 24, 20, tzinfo=UTC), 3)
        assert local(times, BERLIN) == [
            "Thu 2026-12-24 22:00 +0100",
            "Thu 2026-12-24 23:00 +0100",
            "Sat 2026-12-26 07:00 +0100",
        ]

    def test_a_minute_calendar_takes_one_minute(self):
        timing = Timing("*/20 * * * *", "UTC", ANCHOR, exclusions=Exclusions(calendars=("0 12 * * *",)))
        times = fire_times(timing, datetime(2027, 1, 1, 11, 30, tzinfo=UTC), 3)
        assert [moment.strftime("%H:%M") for moment in times] == ["11:40", "12:20", "12:40"]

    def test_excluded_span_of_a_day_across_the_spring_change_is_23_hours(self):
        span = excluded_span(
            Exclusions(dates=(date(2027, 3, 28),), timezone="Europe/Berlin"),
            datetime(2027, 3, 28, 12, tzinfo=UTC),
        )
        assert span is not None
        assert span[1] - span[0] == timedelta(hours=23)

    def test_exclusions_that_leave_nothing_are_refused_with_a_reason(self):
        timing = Timing("0 9 * * *", "UTC", ANCHOR, exclusions=Exclusions(calendars=("* * * * *",)))
        with pytest.raises(ScheduleError, match="exclusions leave no fire time"):
            validate(timing, datetime(2027, 1, 1, tzinfo=UTC))

    def test_a_calendar_with_seconds_or_a_bad_field_is_refused(self):
        for calendar in ("0 * * * * *", "* * 32 * *", "@daily x"):
            timing = Timing("0 9 * * *", "UTC", ANCHOR, exclusions=Exclusions(calendars=(calendar,)))
            with pytest.raises(ScheduleError) as refused:
                validate(timing, datetime(2027, 1, 1, tzinfo=UTC))
            assert refused.value.field == "exclusions"

    def test_every_entry_paused_is_refused(self):
        with pytest.raises(ScheduleError, match="every schedule entry is paused"):
            validate(several(entry("0 9 * * *", paused=True)), datetime(2027, 1, 1, tzinfo=UTC))

    def test_a_bad_entry_is_named_by_its_index(self):
        with pytest.raises(ScheduleError) as refused:
            validate(several(entry("0 9 * * *"), entry("0 25 * * *")), datetime(2027, 1, 1, tzinfo=UTC))
        assert refused.value.field == "schedules[1].schedule"


class TestCatchUp:
    """The misfire plan of a job with several entries works on the union."""

    def test_an_hour_outage_catches_up_every_union_slot_in_the_window(self):
        timing = several(entry("*/10 * * * *"), entry("*/15 * * * *"))
        now = datetime(2027, 1, 1, 13, 0, 30, tzinfo=UTC)
        slot = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
        planned = plan(timing, Misfire(policy=MisfirePolicy.ALL, grace_s=5, window_s=3600), slot, now)
        catchups = [
            fire.slot.strftime("%H:%M") for fire in planned.fires if fire.trigger is RunTrigger.CATCHUP
        ]
        # The window reaches back an hour from now (12:00:30); 13:00 is past its 5 s grace.
        assert catchups == ["12:10", "12:15", "12:20", "12:30", "12:40", "12:45", "12:50", "13:00"]
        assert planned.next_run_at == datetime(2027, 1, 1, 13, 10, tzinfo=UTC)


# --------------------------------------------------------------------------- generated cases

_EXPRESSIONS = st.sampled_from(
    [
        "*/7 * * * *",
        "0 9 * * MON-FRI",
        "30 1 * * *",
        "15,45 */2 * * *",
        "0 0 1 JAN-JUN *",
        "0 12 * * sat,Sun",
        "@every 50m",
        "@every 3h",
        "0 2 * * *",
    ]
)
_ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
_CALENDARS = st.lists(
    st.sampled_from(["* * * * SAT", "* 0-5 * * *", "0 * * * *", "* * 1 * *", "* 12 * JUL *"]), max_size=2
)
_DATES = st.lists(st.dates(min_value=date(2027, 1, 1), max_value=date(2027, 12, 31)), max_size=5)


def _brute_force(timing: Timing, after: datetime, until: datetime) -> list[datetime]:
    """The union of each entry's own fire times in (after, until], minus exclusions checked by croniter."""
    found: set[datetime] = set()
    for each in timing.entries:
        if each.paused:
            continue
        alone = Timing(each.schedule, each.timezone, each.anchor_at, each.start_at, each.end_at)
        moment = after
        while (moment := next_fire(alone, moment)) is not None and moment <= until:  # type: ignore[assignment]
            found.add(moment)
    rules = timing.exclusions
    if rules is not None:
        zone = ZoneInfo(rules.timezone)

        def excluded(moment: datetime) -> bool:
            wall = moment.astimezone(zone).replace(tzinfo=None)
            return wall.date() in rules.dates or any(
                croniter.match(calendar, wall.replace(second=0, microsecond=0))
                for calendar in rules.calendars
            )

        found = {moment for moment in found if not excluded(moment)}
    return sorted(found)


@settings(max_examples=60, deadline=None)
@given(
    expressions=st.lists(_EXPRESSIONS, min_size=1, max_size=3),
    zones=st.lists(_ZONES, min_size=3, max_size=3),
    calendars=_CALENDARS,
    dates=_DATES,
    zone=_ZONES,
    offset_h=st.integers(min_value=0, max_value=24 * 300),
)
def test_the_union_minus_exclusions_matches_a_brute_force_walk_both_ways(  # noqa: PLR0917 - hypothesis
    expressions: list[str],
    zones: list[str],
    calendars: list[str],
    dates: list[date],
    zone: str,
    offset_h: int,
) -> None:
    timing = several(
        *(entry(expression, zones[index]) for index, expression in enumerate(expressions)),
        exclusions=Exclusions(dates=tuple(sorted(set(dates))), calendars=tuple(calendars), timezone=zone)
        if calendars or dates
        else None,
    )
    after = datetime(2027, 1, 1, tzinfo=UTC) + timedelta(hours=offset_h)
    until = after + timedelta(days=3)
    expected = _brute_force(timing, after, until)
    got = [moment for moment in fire_times(timing, after, len(expected) + 1) if moment <= until]
    assert got == expected
    # The way back finds the same instants, newest first.
    back: list[datetime] = []
    moment = until
    while (found := prev_fire(timing, moment)) is not None and found > after:
        back.append(found)
        moment = found - timedelta(microseconds=1)
    assert back[::-1] == expected
