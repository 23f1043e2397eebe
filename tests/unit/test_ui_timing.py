"""The console's times for people, without a server: clock changes a year ahead, times relative to now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.domain.schedule import Timing
from scheduler.ui.timing import clock_changes, relative, upcoming

DECEMBER = datetime(2026, 12, 3, 12, tzinfo=UTC)


class TestClockChanges:
    """DST changes looked up over the next year, not over the next ten fires."""

    def test_a_daily_job_seen_in_december_learns_of_the_march_change(self) -> None:
        """02:30 in Berlin: the next ten fires say nothing, the year ahead holds March and October."""
        timing = Timing("30 2 * * *", "Europe/Berlin", DECEMBER)
        assert [fire.note for fire in upcoming(timing, DECEMBER, 10)] == [None] * 10
        march, october = clock_changes(timing, DECEMBER)
        assert march.summary == "Sunday 28 March 2027, 02:00 CET: clocks go forward 1 h, to 03:00 CEST"
        assert march.notes == ["02:30 does not exist on 28 March: fires at 03:00 CEST"]
        assert october.summary == "Sunday 31 October 2027, 03:00 CEST: clocks go back 1 h, to 02:00 CET"
        assert october.notes == [
            "02:30 happens twice on 31 October (CEST, then CET): this is the first, CEST"
        ]

    def test_a_job_the_change_does_not_touch_gets_the_change_and_its_next_fire(self) -> None:
        """09:00 keeps its wall time: no note, and the first fire after the change is 07:00 UTC."""
        march, _ = clock_changes(Timing("0 9 * * *", "Europe/Berlin", DECEMBER), DECEMBER)
        assert march.notes == []
        assert march.next_fire == datetime(2027, 3, 28, 7, tzinfo=UTC)

    def test_the_first_fire_from_a_gap_is_the_one_it_moved(self) -> None:
        """02:30 on the spring-forward day fires at the change itself, 03:00 CEST."""
        march, _ = clock_changes(Timing("30 2 * * *", "Europe/Berlin", DECEMBER), DECEMBER)
        assert march.next_fire == march.at == datetime(2027, 3, 28, 1, tzinfo=UTC)

    def test_an_hourly_job_hears_of_both_copies_of_the_repeated_hour(self) -> None:
        """A job on real time fires in both copies of 02:00 on the fall-back day."""
        _, october = clock_changes(Timing("0 * * * *", "Europe/Berlin", DECEMBER), DECEMBER)
        assert [note.rsplit(", ", 1)[1] for note in october.notes] == ["CEST", "CET"]

    def test_zones_without_changes_and_uneven_ones(self) -> None:
        """UTC has none in the year; Lord Howe moves its clocks by half an hour."""
        assert clock_changes(Timing("0 9 * * *", "UTC", DECEMBER), DECEMBER) == []
        changes = clock_changes(Timing("0 9 * * *", "Australia/Lord_Howe", DECEMBER), DECEMBER)
        assert [change.summary.split(": ")[1] for change in changes] == [
            "clocks go back 30 min, to 01:30 +1030",
            "clocks go forward 30 min, to 02:30 +11",
        ]

    def test_the_horizon_is_a_year(self) -> None:
        """Seen in February, the change of the March after next is beyond it."""
        february = datetime(2027, 2, 1, tzinfo=UTC)
        changes = clock_changes(Timing("30 2 * * *", "Europe/Berlin", february), february)
        assert [change.at.date().isoformat() for change in changes] == ["2027-03-28", "2027-10-31"]

    def test_an_interval_job_gets_no_wall_clock_notes(self) -> None:
        """@every counts real time: the change is listed, nothing is noted against it."""
        changes = clock_changes(Timing("@every 1h", "Europe/Berlin", DECEMBER), DECEMBER)
        assert [change.notes for change in changes] == [[], []]


class TestRelative:
    """Times as a person says them."""

    @pytest.mark.parametrize(
        ("offset", "words"),
        [
            (timedelta(0), "now"),
            (timedelta(seconds=12), "in 12 s"),
            (timedelta(minutes=4, seconds=10), "in 4 min"),
            (-timedelta(hours=3, minutes=10), "3 h ago"),
            (-timedelta(days=3), "3 d ago"),
            (timedelta(days=120), "2027-04-02"),
        ],
    )
    def test_words(self, offset: timedelta, words: str) -> None:
        """Seconds, minutes, hours, days, then the date."""
        assert relative(DECEMBER + offset, DECEMBER) == words

    def test_none_is_a_dash(self) -> None:
        """No time at all."""
        assert relative(None, DECEMBER) == "—"
