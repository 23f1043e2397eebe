"""Fire-time arithmetic: parsing, intervals, one-time jobs, DST rules, and cronsim as an oracle."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from cronsim import CronSim, CronSimError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scheduler.domain.misfire import last_fires
from scheduler.domain.schedule import (
    ScheduleError,
    Timing,
    compile_schedule,
    fire_times,
    next_fire,
    prev_fire,
    validate,
)

NY = ZoneInfo("America/New_York")
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def timing(schedule: str, zone: str = "UTC", **extra: datetime | None) -> Timing:
    anchor = extra.pop("anchor_at", None) or EPOCH
    return Timing(
        schedule, zone, anchor, start_at=extra.pop("start_at", None), end_at=extra.pop("end_at", None)
    )


def local(times: list[datetime], zone: ZoneInfo = NY) -> list[str]:
    return [t.astimezone(zone).isoformat() for t in times]


class TestParsing:
    """Expressions are validated at write time with a message saying what is wrong."""

    @pytest.mark.parametrize(
        "expression",
        [
            "0 9 * * 1",
            "*/5 * * * * *",
            "0 0 L * *",
            "0 9 * * MON#2",
            "0 0 15W * *",
            "0 12 * JAN-MAR SUN",
            "@yearly",
            "@monthly",
            "@weekly",
            "@daily",
            "@hourly",
            "@every 30s",
            "@every 1h30m",
            "@every 2d",
            "@at 2030-01-01T09:00:00+01:00",
        ],
    )
    def test_valid_expressions_compile(self, expression):
        assert validate(timing(expression), datetime(2026, 1, 1, tzinfo=UTC))

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ("0 0 30 2 *", "never fires"),
            ("0 0 31 4,6,9,11 *", "never fires"),
            ("61 * * * *", "out of range"),
            ("5-3 * * * *", "backwards"),
            ("0 0 * * FOO", "day of week field"),
            ("* * *", "3 fields"),
            ("* * * * * * *", "7 fields"),
            ("H * * * *", "minute field"),
            ("@every 0s", "at least 1s"),
            ("@every 10", "not valid"),
            ("@every", "not valid"),
            ("@at 2030-01-01T09:00:00", "needs an offset"),
            ("@at 2001-01-01T00:00:00Z", "passed"),
            ("@reboot", "unknown schedule macro"),
        ],
    )
    def test_invalid_expressions_say_why(self, expression, message):
        with pytest.raises(ScheduleError, match=message):
            validate(timing(expression), datetime(2026, 1, 1, tzinfo=UTC))

    def test_unknown_zone_names_the_timezone_field(self):
        with pytest.raises(ScheduleError) as caught:
            validate(timing("0 9 * * *", "Europe/Atlantis"), datetime(2026, 1, 1, tzinfo=UTC))
        assert caught.value.field == "timezone"

    def test_end_before_first_fire_is_refused_on_end_at(self):
        with pytest.raises(ScheduleError) as caught:
            validate(
                timing("0 9 1 1 *", end_at=datetime(2026, 6, 1, tzinfo=UTC)), datetime(2026, 2, 1, tzinfo=UTC)
            )
        assert caught.value.field == "end_at"

    def test_compiled_schedules_are_shared(self):
        assert compile_schedule("0 9 * * 1", "Europe/Berlin") is compile_schedule(
            "0 9 * * 1", "Europe/Berlin"
        )


def weekdays_and_days(expression: str, count: int = 12) -> list[str]:
    times = fire_times(timing(expression), datetime(2024, 1, 1, tzinfo=UTC), count)
    return [t.strftime("%a %m-%d") for t in times]


class TestDayFields:
    """Issue 10 items 2 and 3: `?` is `*` in a day field, and restricted day fields are always ORed."""

    def test_question_mark_in_day_of_month_leaves_day_of_week_deciding(self):
        assert weekdays_and_days("0 9 ? * MON", 4) == ["Mon 01-01", "Mon 01-08", "Mon 01-15", "Mon 01-22"]

    def test_question_mark_in_day_of_week_leaves_day_of_month_deciding(self):
        assert weekdays_and_days("0 0 15 * ?", 3) == ["Mon 01-15", "Thu 02-15", "Fri 03-15"]

    @pytest.mark.parametrize(
        ("expression", "field"),
        [
            ("? * * * *", "minute"),
            ("0 ? * * *", "hour"),
            ("0 0 * ? *", "month"),
            ("? 0 0 * * *", "second"),
            ("0 0 ?/2 * *", "day of month"),
            ("0 0 1,? * *", "day of month"),
            ("0 0 * * ?-5", "day of week"),
        ],
    )
    def test_question_mark_is_refused_outside_a_whole_day_field(self, expression, field):
        with pytest.raises(ScheduleError, match=field) as caught:
            validate(timing(expression), datetime(2026, 1, 1, tzinfo=UTC))
        assert caught.value.field == "schedule"

    def test_nth_weekday_is_ored_with_a_day_of_month(self):
        # The 1st of each month and each first Monday; 2024-04-01 is both and fires once.
        assert weekdays_and_days("0 0 1 * MON#1", 6) == [
            "Thu 02-01",
            "Mon 02-05",
            "Fri 03-01",
            "Mon 03-04",
            "Mon 04-01",
            "Wed 05-01",
        ]

    def test_nearest_weekday_is_ored_with_a_day_of_week(self):
        # Mondays, plus the weekday nearest the 15th: 2024-06-15 is a Saturday, so Friday 06-14.
        times = fire_times(timing("0 0 15W * MON"), datetime(2024, 6, 1, tzinfo=UTC), 5)
        assert [t.strftime("%a %m-%d") for t in times] == [
            "Mon 06-03",
            "Mon 06-10",
            "Fri 06-14",
            "Mon 06-17",
            "Mon 06-24",
        ]

    def test_a_day_of_month_is_ored_with_a_second_friday(self):
        assert weekdays_and_days("0 0 15 * 5#2", 4) == ["Fri 01-12", "Mon 01-15", "Fri 02-09", "Thu 02-15"]

    def test_last_day_and_last_friday_are_ored(self):
        assert weekdays_and_days("0 0 L * 5L", 4) == ["Fri 01-26", "Wed 01-31", "Fri 02-23", "Thu 02-29"]

    def test_a_star_day_field_still_ands(self):
        # Debian cron: `*/2` starts with `*`, so it ANDs with the weekday: odd days that are Mondays.
        assert weekdays_and_days("0 0 */2 * MON", 3) == ["Mon 01-15", "Mon 01-29", "Mon 02-05"]

    def test_nearest_weekday_stays_inside_its_month(self):
        # 2024-06-01 is a Saturday: 1W is Monday 06-03, not Friday 05-31.
        assert fire_times(timing("0 0 1W 6 *"), EPOCH, 1) == [datetime(2024, 6, 3, tzinfo=UTC)]
        # 2024-03-31 is a Sunday: 31W is Friday 03-29, not Monday 04-01; April has no 31st, so
        # no fire then; 2025-03-31 is a Monday.
        assert fire_times(timing("0 0 31W 3,4 *"), EPOCH, 2) == [
            datetime(2024, 3, 29, tzinfo=UTC),
            datetime(2025, 3, 31, tzinfo=UTC),
        ]

    @pytest.mark.parametrize(
        "expression",
        ["0 0 * * L", "0 0 L-2 * *", "0 0 1-5W * *", "0 0 * * MON#6", "0 0 * * MON#0", "0 0 LW,L-1 * *"],
    )
    def test_forms_that_cannot_be_computed_exactly_are_refused(self, expression):
        with pytest.raises(ScheduleError):
            validate(timing(expression), datetime(2026, 1, 1, tzinfo=UTC))


class TestZones:
    """Issue 10 item 8: only IANA names from the shipped tzdata; nothing that depends on the host."""

    @pytest.mark.parametrize(
        "name",
        [
            "localtime",
            "Factory",
            "posixrules",
            "/etc/localtime",
            "../zoneinfo/UTC",
            "posix/Europe/Berlin",
            "right/UTC",
            "Europe/../UTC",
            "",
            "europe/berlin",
        ],
    )
    def test_host_dependent_and_unknown_zones_are_refused_on_timezone(self, name):
        with pytest.raises(ScheduleError) as caught:
            validate(timing("0 9 * * *", name), datetime(2026, 1, 1, tzinfo=UTC))
        assert caught.value.field == "timezone"

    @pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "Europe/Berlin", "US/Eastern", "Asia/Kathmandu"])
    def test_iana_names_and_their_links_are_accepted(self, name):
        assert validate(timing("0 9 * * *", name), datetime(2026, 1, 1, tzinfo=UTC))


class TestIntervalsAndBounds:
    """`@every` counts from its anchor; start_at and end_at bound any schedule."""

    def test_every_counts_from_the_anchor_and_never_drifts(self):
        anchor = datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)
        t = timing("@every 1h30m", anchor_at=anchor)
        late_base = anchor + timedelta(hours=1, minutes=31, seconds=13)  # a run that finished late
        assert next_fire(t, late_base) == anchor + timedelta(hours=3)

    def test_start_at_is_the_first_fire_of_an_interval(self):
        start = datetime(2026, 3, 1, 12, tzinfo=UTC)
        t = timing("@every 10m", anchor_at=start, start_at=start)
        assert fire_times(t, datetime(2026, 1, 1, tzinfo=UTC), 2) == [start, start + timedelta(minutes=10)]

    def test_end_at_stops_the_schedule(self):
        t = timing("0 * * * *", end_at=datetime(2026, 1, 1, 3, tzinfo=UTC))
        assert len(fire_times(t, datetime(2026, 1, 1, tzinfo=UTC), 10)) == 3

    def test_one_time_schedule_fires_once(self):
        t = timing("@at 2026-12-01T09:00:00+01:00")
        assert fire_times(t, datetime(2026, 1, 1, tzinfo=UTC), 5) == [datetime(2026, 12, 1, 8, tzinfo=UTC)]

    def test_last_fires_finds_the_newest_slots_of_a_long_gap(self):
        t = timing("* * * * * *")
        high = datetime(2026, 1, 2, tzinfo=UTC)
        found = last_fires(t, datetime(2026, 1, 1, tzinfo=UTC), high, 100)
        assert found == [high - timedelta(seconds=s) for s in range(100, 0, -1)]


class TestDaylightSaving:
    """SPEC 3.1 examples for America/New_York through the pure function (the API: tests/integration)."""

    def test_spring_gap_fires_once_at_the_end_of_the_gap(self):
        times = fire_times(timing("30 2 * * *", "America/New_York"), datetime(2024, 3, 9, 12, tzinfo=NY), 3)
        assert local(times) == [
            "2024-03-10T03:00:00-04:00",
            "2024-03-11T02:30:00-04:00",
            "2024-03-12T02:30:00-04:00",
        ]

    def test_fall_back_fixed_hour_fires_once(self):
        times = fire_times(timing("30 1 * * *", "America/New_York"), datetime(2024, 11, 2, 12, tzinfo=NY), 2)
        assert local(times) == ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"]

    def test_fall_back_star_hour_fires_in_both_copies(self):
        times = fire_times(
            timing("30 * * * *", "America/New_York"), datetime(2024, 11, 3, 0, 45, tzinfo=NY), 3
        )
        assert local(times) == [
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:30:00-05:00",
            "2024-11-03T02:30:00-05:00",
        ]

    def test_spring_gap_star_hour_skips_the_missing_hour(self):
        times = fire_times(
            timing("30 * * * *", "America/New_York"), datetime(2024, 3, 10, 1, 0, tzinfo=NY), 2
        )
        assert local(times) == ["2024-03-10T01:30:00-05:00", "2024-03-10T03:30:00-04:00"]

    def test_half_hour_fall_back_fires_from_the_top_of_a_real_hour(self):
        # Lord Howe goes from 02:00+11:00 back to 01:30+10:30 on 2024-04-07; 02:00+10:30 is real.
        times = fire_times(timing("* 2 * * 0", "Australia/Lord_Howe"), datetime(2024, 3, 31, tzinfo=UTC), 1)
        assert times == [datetime(2024, 4, 6, 15, 30, tzinfo=UTC)]

    def test_fall_back_at_a_quarter_to_fires_the_real_minutes_of_the_repeated_hour(self):
        # Chatham goes from 03:45+13:45 back to 02:45+12:45 on 2024-04-07: hour 2 comes round
        # again for its last 15 minutes, and an expression matched in real time fires in them.
        base = datetime(2024, 4, 6, 13, 59, 58, tzinfo=UTC)  # 03:44:58+13:45
        times = fire_times(timing("* 0-2 * * *", "Pacific/Chatham"), base, 2)
        assert times == [datetime(2024, 4, 6, 14, 0, tzinfo=UTC), datetime(2024, 4, 6, 14, 1, tzinfo=UTC)]


MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


def fires_after(expression: str, after: datetime, count: int) -> list[str]:
    return [t.strftime("%a %Y-%m-%d") for t in fire_times(timing(expression), after, count)]


class TestNamesInAnyCase:
    """Issue 21: month and weekday names, in any case, stand wherever a number may.

    L, W and # are read only as the day-field operators they are: WED and JUL hold the letters
    of the W and L operators, and were once refused for it.
    """

    @pytest.mark.parametrize(
        ("expression", "after", "expected"),
        [
            ("0 0 * * WED", EPOCH, ["Wed 2024-01-03", "Wed 2024-01-10", "Wed 2024-01-17"]),
            # A restricted day of month and a weekday are ORed: the Wednesdays and the 1st.
            (
                "0 0 1 * wed",
                datetime(2024, 1, 25, tzinfo=UTC),
                ["Wed 2024-01-31", "Thu 2024-02-01", "Wed 2024-02-07"],
            ),
            (
                "0 0 * * Sun-Wed",
                EPOCH,
                ["Tue 2024-01-02", "Wed 2024-01-03", "Sun 2024-01-07", "Mon 2024-01-08"],
            ),
            (
                "0 0 * * MON-WED",
                EPOCH,
                ["Tue 2024-01-02", "Wed 2024-01-03", "Mon 2024-01-08", "Tue 2024-01-09"],
            ),
            ("0 0 1 JUL *", EPOCH, ["Mon 2024-07-01", "Tue 2025-07-01"]),
            ("0 0 1 JUN-JUL *", EPOCH, ["Sat 2024-06-01", "Mon 2024-07-01", "Sun 2025-06-01"]),
            (
                "0 0 * * MON-FRI/2",
                EPOCH,
                ["Wed 2024-01-03", "Fri 2024-01-05", "Mon 2024-01-08", "Wed 2024-01-10"],
            ),
            ("0 0 1 jan,Jul *", EPOCH, ["Mon 2024-07-01", "Wed 2025-01-01", "Tue 2025-07-01"]),
            ("0 0 * * WED#2", EPOCH, ["Wed 2024-01-10", "Wed 2024-02-14", "Wed 2024-03-13"]),
            ("0 0 * * wedl", EPOCH, ["Wed 2024-01-31", "Wed 2024-02-28", "Wed 2024-03-27"]),
            ("0 0 * * FRIL", EPOCH, ["Fri 2024-01-26", "Fri 2024-02-23", "Fri 2024-03-29"]),
            ("0 0 * * 5L", EPOCH, ["Fri 2024-01-26", "Fri 2024-02-23", "Fri 2024-03-29"]),
            ("0 0 L JUL *", EPOCH, ["Wed 2024-07-31", "Thu 2025-07-31"]),
            ("0 0 LW * *", EPOCH, ["Wed 2024-01-31", "Thu 2024-02-29", "Fri 2024-03-29"]),
            ("0 0 15W jun,JUL *", EPOCH, ["Fri 2024-06-14", "Mon 2024-07-15", "Mon 2025-06-16"]),
        ],
    )
    def test_names_fire_where_their_numbers_do(self, expression, after, expected):
        assert fires_after(expression, after, len(expected)) == expected

    def test_every_name_in_every_case_means_its_number(self):
        after = datetime(2024, 1, 1, tzinfo=UTC)
        for number, name in enumerate(MONTH_NAMES, start=1):
            for spelled in (name, name.lower(), name.title()):
                assert fires_after(f"0 0 1 {spelled} *", after, 2) == fires_after(
                    f"0 0 1 {number} *", after, 2
                )
        for number, name in enumerate(DAY_NAMES):
            for spelled in (name, name.lower(), name.title()):
                for form in ("{}", "{}#2", "{}L"):
                    written, numbered = form.format(spelled), form.format(number)
                    assert fires_after(f"0 0 * * {written}", after, 3) == fires_after(
                        f"0 0 * * {numbered}", after, 3
                    ), written

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ("WED * * * *", "minute field has an unknown value 'WED'"),
            ("0 JUL * * *", "hour field has an unknown value 'JUL'"),
            ("0 0 JUL * *", "day of month field has an unknown value 'JUL'"),
            ("0 0 * WED *", "month field has an unknown value 'WED'"),
            ("0 0 * * JUL", "day of week field has an unknown value 'JUL'"),
            ("0 0 * * JULL", "day of week field has an unknown value 'JUL'"),
            ("0 0 * * WEDNESDAY", "day of week field 'WEDNESDAY' is not valid"),
            ("0 0 1 L *", "month field 'L' is not valid: L, W and # belong to the day fields"),
            ("0 0 1 JULW *", "month field 'JULW' is not valid: L, W and # belong to the day fields"),
            ("0 0 * JUL#2 *", "month field 'JUL#2' is not valid: L, W and # belong to the day fields"),
            ("0 L * * *", "hour field 'L' is not valid: L, W and # belong to the day fields"),
            ("0 0 WEDW * *", "day of month field 'WEDW' is not valid: use a day"),
            ("0 0 * * WEDW", "day of week field 'WEDW' is not valid: use a weekday"),
            ("0 0 * * W", "day of week field 'W' is not valid: use a weekday"),
            ("0 0 * * WED-SUN", "runs backwards"),
        ],
    )
    def test_a_name_or_operator_out_of_its_field_is_refused_naming_the_field(self, expression, message):
        with pytest.raises(ScheduleError, match=re.escape(message)) as caught:
            validate(timing(expression), datetime(2026, 1, 1, tzinfo=UTC))
        assert caught.value.field == "schedule"


# Every character str.split() takes for whitespace except the two that separate cron fields.
NOT_SEPARATORS = [
    char for char in map(chr, range(sys.maxunicode + 1)) if char.isspace() and char not in " \t"
]


class TestFieldSeparators:
    """Issue 21: only ASCII spaces and tabs separate fields; any other character is refused, named."""

    @pytest.mark.parametrize(
        ("expression", "named"),
        [
            ("0\u00a00 * * *", "U+00A0 (NO-BREAK SPACE) at character 2"),
            ("0 0\u2003* * *", "U+2003 (EM SPACE) at character 4"),
            ("0 0 *\u3000* *", "U+3000 (IDEOGRAPHIC SPACE) at character 6"),
            ("0 0 * *\u0085*", "U+0085 (a control character) at character 8"),
            ("0 0\n* * *", "U+000A (a control character) at character 4"),
            ("0 0 * * *\n", "U+000A (a control character) at character 10"),
            ("\u00a00 0 * * *", "U+00A0 (NO-BREAK SPACE) at character 1"),
            ("0 0 * * 1\u2028", "U+2028 (LINE SEPARATOR) at character 10"),
            ("@every\u00a01h", "U+00A0 (NO-BREAK SPACE) at character 7"),
            ("@at\u30002030-01-01T00:00:00Z", "U+3000 (IDEOGRAPHIC SPACE) at character 4"),
        ],
    )
    def test_other_whitespace_is_refused_naming_it(self, expression, named):
        with pytest.raises(ScheduleError, match=re.escape(named) + ": only ASCII spaces and tabs") as caught:
            validate(timing(expression), datetime(2026, 1, 1, tzinfo=UTC))
        assert caught.value.field == "schedule"

    @pytest.mark.parametrize(
        ("expression", "named"),
        [
            ("0 0 * * \u017fun", "U+017F (LATIN SMALL LETTER LONG S)"),  # upper-cases to SUN
            ("0 0 * * fr\u0131", "U+0131 (LATIN SMALL LETTER DOTLESS I)"),  # upper-cases to FRI
            ("\uff10 0 * * *", "U+FF10 (FULLWIDTH DIGIT ZERO)"),
            ("@every \uff11h", "U+FF11 (FULLWIDTH DIGIT ONE)"),  # a digit to int() and to \\d
            ("0 0 * * 1\x1b", "U+001B (a control character)"),
        ],
    )
    def test_lookalikes_of_names_and_digits_are_refused(self, expression, named):
        with pytest.raises(ScheduleError, match=re.escape(named) + r".*printable ASCII only"):
            validate(timing(expression), datetime(2026, 1, 1, tzinfo=UTC))

    @pytest.mark.parametrize("expression", ["0\t0 * * *", "  0  0\t \t* *  *\t", "\t@daily "])
    def test_runs_of_spaces_and_tabs_separate_fields(self, expression):
        assert fires_after(expression, EPOCH, 3) == fires_after("0 0 * * *", EPOCH, 3)


# ------------------------------------------------------------------------ the cronsim oracle

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Santiago",
    "Pacific/Chatham",  # a +12:45 offset
    "Asia/Kolkata",
    "America/St_Johns",
]


def _field(draw: st.DrawFn, low: int, high: int) -> str:
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
        # cronsim reads `3-3/1` as `3/1` (3 to the end), so the oracle only sees proper ranges here.
        a = draw(st.integers(low, high - 1))
        return f"{a}-{draw(st.integers(a + 1, high))}/{draw(st.integers(1, 5))}"
    values = sorted(set(draw(st.lists(st.integers(low, high), min_size=2, max_size=4))))
    return ",".join(map(str, values))


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    minute, hour = _field(draw, 0, 59), _field(draw, 0, 23)
    day, month, weekday = _field(draw, 1, 28), _field(draw, 1, 12), _field(draw, 0, 6)
    fields = [minute, hour, day, month, weekday]
    if draw(st.booleans()):
        fields.insert(0, _field(draw, 0, 59))
    return " ".join(fields)


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    if draw(st.booleans()):
        # Close to a DST change, where the rules matter.
        base = draw(
            st.sampled_from(
                [
                    datetime(2024, 3, 10, 6, tzinfo=UTC),
                    datetime(2024, 11, 3, 5, tzinfo=UTC),
                    datetime(2024, 3, 31, 0, tzinfo=UTC),
                    datetime(2024, 10, 27, 0, tzinfo=UTC),
                    datetime(2024, 4, 6, 14, tzinfo=UTC),
                    datetime(2024, 9, 7, 3, tzinfo=UTC),
                ]
            )
        )
        return base + timedelta(seconds=draw(st.integers(-3 * 3600, 3 * 3600)))
    return datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 10 * 365 * 86400)))


def cronsim_answers_a_wall_time_that_never_happens(expected: datetime) -> bool:
    """Whether cronsim's answer is a wall time inside a spring-forward gap (a time no clock showed).

    For an expression it matches in real time (a minute or hour starting with `*`), cronsim moves
    between days by setting the wall clock to midnight, and where midnight falls in a gap that
    time does not exist: from 2024-09-07 it answers `* 0 * * 0` in America/Santiago with
    2024-09-08 00:00-04:00, which no clock there showed, while from 2024-09-08 it skips that day, as
    SPEC 3.1's real-time rule (and our engine) does from either start.
    """
    wall = expected.replace(tzinfo=None)
    return expected.astimezone(UTC).astimezone(expected.tzinfo).replace(tzinfo=None) != wall


def cronsim_steps_over_an_odd_clock_change(zone: str, base: datetime, expected: datetime) -> bool:
    """Whether a clock change off the whole hour lies between ``base`` and cronsim's answer.

    cronsim finds a matching hour by stepping real time an hour at a time from hh:00; after a
    change that does not land on hh:00 it skips real minutes of every hour it steps over
    afterwards. Lord Howe moves its clocks by 30 minutes: for `* 2 * * 0` after 2024-04-07
    02:00+11:00 cronsim answers 02:30+10:30, not 02:00+10:30; for `* 5 L * 0#1` from 2024-03-31 it
    answers 05:30+10:30, three hours after the change, not 05:00+10:30. Chatham moves them by an hour
    at 03:45: for `* 0-2 * * *` from 2024-04-06 13:59:58Z (03:44:58+13:45, a second before the
    fall-back) it answers the next day's 00:00, while hour 2 comes round again at 02:45+12:45
    (14:00Z). SPEC 3.1 fires at every real matching minute; TestDaylightSaving checks those cases
    against SPEC directly.
    """
    if zone not in ("Australia/Lord_Howe", "Pacific/Chatham"):
        return False
    tz = ZoneInfo(zone)
    offsets = set()
    moment = base
    while moment < expected:  # the changes are months apart: a step of a day cannot jump over two
        offsets.add(moment.astimezone(tz).utcoffset())
        moment += timedelta(days=1)
    offsets.add(expected.astimezone(tz).utcoffset())
    return len(offsets) > 1


def _day_of_month_special(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["L", "LW", "1", "15", "31", "1,15", "10-20", "*/3"]))


def _day_of_week_special(draw: st.DrawFn) -> str:
    day = draw(st.sampled_from(["0", "1", "5", "6", "MON", "FRI"]))
    return draw(st.sampled_from([f"{day}#{draw(st.integers(1, 5))}", f"{day}L", "MON-FRI", "*"]))


@st.composite
def special_day_expressions(draw: st.DrawFn) -> str:
    """L, LW, # and nL in the day fields (cronsim refuses `?` and `15W`; test_schedule_prev covers them)."""
    fields = [
        _field(draw, 0, 59),
        _field(draw, 0, 23),
        _day_of_month_special(draw),
        draw(st.sampled_from(["*", "2", "*/3", "JAN-MAR"])),
        _day_of_week_special(draw),
    ]
    return " ".join(fields)


class TestAgainstCronsim:
    """Our next fire time is after the base, matches the expression, and agrees with cronsim."""

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(expression=cron_expressions(), zone=st.sampled_from(ZONES), base=instants())
    def test_next_fire_agrees_with_cronsim(self, expression, zone, base):
        tz = ZoneInfo(zone)
        try:
            oracle = CronSim(expression, base.astimezone(tz))
            expected = next(oracle)
        except (CronSimError, StopIteration):
            assume(False)
            raise  # unreachable: assume(False) ends the example
        # cronsim can answer a wall time before the base when the base sits in a repeated hour.
        assume(expected.astimezone(UTC) > base)
        assume(not cronsim_steps_over_an_odd_clock_change(zone, base, expected))
        assume(not cronsim_answers_a_wall_time_that_never_happens(expected))
        ours = next_fire(timing(expression, zone), base)
        assert ours is not None
        assert ours > base
        assert ours == expected.astimezone(UTC), (expression, zone, base, ours, expected)
        wall = ours.astimezone(tz).replace(tzinfo=None)
        fields = expression.split()
        in_gap = ours.astimezone(tz).utcoffset() != (ours - timedelta(seconds=1)).astimezone(tz).utcoffset()
        assert (
            in_gap
            or croniter.match(" ".join(fields), wall, second_at_beginning=len(fields) == 6, day_or=False)
            or croniter.match(" ".join(fields), wall, second_at_beginning=len(fields) == 6)
        )

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(expression=special_day_expressions(), zone=st.sampled_from(ZONES), base=instants())
    def test_or_of_special_day_forms_agrees_with_cronsim(self, expression, zone, base):
        """Our OR of L, LW, # and nL with the other day field is cronsim's, as SPEC 3.1 asks."""
        tz = ZoneInfo(zone)
        try:
            expected = next(CronSim(expression, base.astimezone(tz)))
        except (CronSimError, StopIteration):
            assume(False)
            raise  # unreachable: assume(False) ends the example
        assume(expected.astimezone(UTC) > base)
        assume(not cronsim_steps_over_an_odd_clock_change(zone, base, expected))
        assume(not cronsim_answers_a_wall_time_that_never_happens(expected))
        assert next_fire(timing(expression, zone), base) == expected.astimezone(UTC), (expression, zone, base)


# ------------------------------------------------------------- names, in any case, generated


@st.composite
def any_case(draw: st.DrawFn, word: str) -> str:
    """``word`` with each letter upper or lower case at random."""
    lower = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.lower() if flip else c for c, flip in zip(word, lower, strict=True))


def _spelled(draw: st.DrawFn, value: int, names: tuple[str, ...], first: int) -> tuple[str, str]:
    """``value`` as its name in a random case, or as its number: (as written, as a number)."""
    index = value - first
    if 0 <= index < len(names) and draw(st.booleans()):
        return draw(any_case(names[index])), str(value)
    return str(value), str(value)


def _named_item(draw: st.DrawFn, names: tuple[str, ...], first: int, high: int) -> tuple[str, str]:
    """One list item of a month or weekday field, names and numbers mixed: (written, numbered)."""
    kind = draw(st.sampled_from(["value", "value", "range", "range_step", "value_step"]))
    a = draw(st.integers(first, high - 1 if kind == "range_step" else high))
    start = _spelled(draw, a, names, first)
    if kind == "value":
        return start
    if kind == "value_step":  # `JUL/2`: from July to the end of the year, every other month
        step = draw(st.integers(1, 4))
        return f"{start[0]}/{step}", f"{start[1]}/{step}"
    # cronsim reads `3-3/1` as `3/1` (3 to the end), so a range with a step is a proper one.
    end = _spelled(draw, draw(st.integers(a + 1 if kind == "range_step" else a, high)), names, first)
    step_text = f"/{draw(st.integers(1, 4))}" if kind == "range_step" else ""
    return f"{start[0]}-{end[0]}{step_text}", f"{start[1]}-{end[1]}{step_text}"


def _named_field(draw: st.DrawFn, names: tuple[str, ...], first: int, high: int) -> tuple[str, str]:
    """A month or weekday field: `*`, one item or a list of them: (written, numbered)."""
    if not draw(st.integers(0, 5)):
        return "*", "*"
    items = [_named_item(draw, names, first, high) for _ in range(draw(st.integers(1, 3)))]
    return ",".join(written for written, _ in items), ",".join(numbered for _, numbered in items)


@st.composite
def named_cron_expressions(draw: st.DrawFn) -> str:
    """Expressions whose month and weekday fields mix names (any case) and numbers; 7 is Sunday too."""
    minute, hour, day = _field(draw, 0, 59), _field(draw, 0, 23), _field(draw, 1, 28)
    month, _ = _named_field(draw, MONTH_NAMES, 1, 12)
    weekday, _ = _named_field(draw, DAY_NAMES, 0, 7)
    return f"{minute} {hour} {day} {month} {weekday}"


def _named_day_of_week(draw: st.DrawFn) -> tuple[str, str]:
    """A weekday field with the day operators too: `wed#2`, `FRIL`, `Sun-Wed`: (written, numbered)."""
    kind = draw(st.sampled_from(["plain", "nth", "last", "mixed"]))
    day = _spelled(draw, draw(st.integers(0, 6)), DAY_NAMES, 0)
    nth, last = f"#{draw(st.integers(1, 5))}", draw(any_case("L"))
    if kind == "plain":
        return _named_field(draw, DAY_NAMES, 0, 7)
    if kind == "nth":
        return day[0] + nth, day[1] + nth
    if kind == "last":
        return day[0] + last, day[1] + last
    other = _named_item(draw, DAY_NAMES, 0, 7)
    return f"{day[0]}{nth},{other[0]}", f"{day[1]}{nth},{other[1]}"


@st.composite
def spelled_two_ways(draw: st.DrawFn) -> tuple[str, str]:
    """The same expression with names (any case, operators too) and with numbers only."""
    day = draw(st.sampled_from(["*", "*", "?", "1", "15", "L", "LW", "15W", "1W", "31W", "1,L"]))
    day = draw(any_case(day))
    month = _named_field(draw, MONTH_NAMES, 1, 12)
    weekday = _named_day_of_week(draw) if draw(st.booleans()) else ("*", "*")
    written = f"0 {draw(st.sampled_from(['0', '9', '*/6']))} {day} {month[0]} {weekday[0]}"
    numbered = f"0 {written.split()[1]} {day} {month[1]} {weekday[1]}"
    return written, numbered


class TestGeneratedNames:
    """Names in any case, in ranges, lists and steps, and beside L, W and #, mean their numbers."""

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(expression=named_cron_expressions(), zone=st.sampled_from(ZONES), base=instants())
    def test_named_expressions_agree_with_cronsim(self, expression, zone, base):
        tz = ZoneInfo(zone)
        try:
            expected = next(CronSim(expression, base.astimezone(tz)))
        except (CronSimError, StopIteration):
            assume(False)
            raise  # unreachable: assume(False) ends the example
        assume(expected.astimezone(UTC) > base)
        assume(not cronsim_steps_over_an_odd_clock_change(zone, base, expected))
        assume(not cronsim_answers_a_wall_time_that_never_happens(expected))
        assert next_fire(timing(expression, zone), base) == expected.astimezone(UTC), (expression, zone, base)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(pair=spelled_two_ways(), zone=st.sampled_from(ZONES), base=instants())
    def test_an_expression_with_names_fires_as_its_numbers_do(self, pair, zone, base):
        # No oracle: cronsim refuses `FRIL`, `15W` and `?`. Every generated spelling is valid, so a
        # refusal fails the test rather than skipping the example.
        written, numbered = pair
        named_timing, numbered_timing = timing(written, zone), timing(numbered, zone)
        compile_schedule(written, zone)
        assert fire_times(named_timing, base, 4) == fire_times(numbered_timing, base, 4), pair
        assert prev_fire(named_timing, base) == prev_fire(numbered_timing, base), pair


@st.composite
def separated(draw: st.DrawFn, fields: list[str]) -> str:
    """``fields`` joined by runs of ASCII spaces and tabs, with runs (maybe empty) at both ends too."""
    run = st.text(st.sampled_from(" \t"), min_size=1, max_size=3)
    edge = st.text(st.sampled_from(" \t"), max_size=2)
    return draw(edge) + "".join(field + draw(run) for field in fields[:-1]) + fields[-1] + draw(edge)


class TestGeneratedSeparators:
    """Any run of spaces and tabs separates fields; any other whitespace anywhere is refused, named."""

    @settings(max_examples=150, deadline=None)
    @given(expression=named_cron_expressions(), data=st.data())
    def test_runs_of_spaces_and_tabs_read_as_one_space(self, expression, data):
        spaced = data.draw(separated(expression.split(" ")))
        assert fire_times(timing(spaced), EPOCH, 3) == fire_times(timing(expression), EPOCH, 3)

    @settings(max_examples=300, deadline=None)
    @given(expression=named_cron_expressions(), char=st.sampled_from(NOT_SEPARATORS), data=st.data())
    def test_other_whitespace_is_never_a_separator(self, expression, char, data):
        spaced = data.draw(separated(expression.split(" ")))
        # Anywhere: in place of a separator, beside one, inside a field or at either end.
        position = data.draw(st.integers(0, len(spaced)))
        replace = data.draw(st.booleans()) and position < len(spaced) and spaced[position] in " \t"
        text = spaced[:position] + char + spaced[position + replace :]
        with pytest.raises(
            ScheduleError, match=rf"U\+{ord(char):04X} .*: only ASCII spaces and tabs"
        ) as caught:
            compile_schedule(text, "UTC")
        assert caught.value.field == "schedule"
