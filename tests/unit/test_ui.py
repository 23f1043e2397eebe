"""The helpers behind the console's pages, without a server: schedules in plain words, DST-aware times.

The console itself, in-process on a real PostgreSQL: tests/integration/test_ui.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.domain.schedule import Timing
from scheduler.ui.timing import describe, upcoming


class TestTiming:
    """The plain-words and DST helpers behind the pages."""

    @pytest.mark.parametrize(
        ("expression", "words"),
        [
            ("0 9 * * 1", "at 09:00 on Monday"),
            ("*/5 * * * *", "every 5 minutes"),
            ("0 9 * * MON-FRI", "at 09:00 on Monday to Friday"),
            ("@every 1h30m", "every 1 hour 30 minutes"),
            ("@daily", "every day at 00:00"),
            ("0 0 1 * MON#1", "0 0 1 * MON#1"),
        ],
    )
    def test_schedules_in_plain_words(self, expression: str, words: str) -> None:
        """Common forms read as words; unusual ones are shown as written."""
        assert describe(expression) == words

    def test_a_fire_in_the_spring_gap_says_when_it_really_fires(self) -> None:
        """02:30 on the US spring-forward day does not exist: the note says it fires at 03:00 EDT."""
        now = datetime(2026, 3, 7, 12, tzinfo=UTC)
        fires = upcoming(Timing("30 2 * * *", "America/New_York", now), now, 3)
        assert [fire.note for fire in fires] == [
            "02:30 does not exist on 8 March: fires at 03:00 EDT",
            None,
            None,
        ]

    def test_a_repeated_hour_is_noted(self) -> None:
        """01:30 on the US fall-back day happens twice; the note says which copy fires."""
        now = datetime(2026, 10, 31, 12, tzinfo=UTC)
        fires = upcoming(Timing("30 1 * * *", "America/New_York", now), now, 1)
        assert fires[0].note == "01:30 happens twice on 1 November (EDT, then EST): this is the first, EDT"
