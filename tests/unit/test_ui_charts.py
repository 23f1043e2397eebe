"""The console's charts without a server: slots, the outcome strip, durations on a log scale, lateness."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from scheduler.domain.models import Run, RunStatus, RunTrigger
from scheduler.ids import uuid7
from scheduler.ui import charts

SLOT = datetime(2026, 12, 3, 9, tzinfo=UTC)


def run(slot: datetime, attempt: int = 1, status: str = "succeeded", *, duration_ms: int | None = 100,
        late_s: float = 0.05, trigger: str | None = None) -> Run:  # fmt: skip
    """One attempt at ``slot``; attempt 1 is scheduled and later ones are retries unless told."""
    started = slot + timedelta(seconds=late_s)
    return Run(
        id=uuid7(slot), job_id=uuid7(SLOT), scheduled_for=slot,
        trigger=RunTrigger(trigger or ("schedule" if attempt == 1 else "retry")), attempt=attempt,
        status=RunStatus(status), runner="r-1", started_at=started,
        finished_at=None if duration_ms is None else started + timedelta(milliseconds=duration_ms),
        duration_ms=duration_ms, http_status=None, output=None,
        error=None if status == "succeeded" else f"{status} at attempt {attempt}", available_at=None,
        created_at=slot,
    )  # fmt: skip


def bar_heights(svg: str) -> dict[str, float]:
    """Each bar's height by its data-ms value."""
    return {ms: float(h) for h, ms in re.findall(r'height="([\d.]+)" class="s-\w+" data-ms="(\d*)"', svg)}


class TestSlots:
    """Runs grouped by slot, each slot standing as its newest attempt ended."""

    def test_attempts_of_a_slot_are_one_slot_with_the_last_outcome(self) -> None:
        """Four failed attempts and a fifth that succeeded: one succeeded slot of five attempts."""
        runs = [run(SLOT, n, "failed") for n in range(1, 5)] + [run(SLOT, 5)]
        runs += [run(SLOT + timedelta(hours=1), 1, "failed")]
        (newer, older) = charts.slots_of(list(reversed(runs)))
        assert (newer.status, len(newer.attempts)) == (RunStatus.FAILED, 1)
        assert (older.status, len(older.attempts), older.trigger) == (
            RunStatus.SUCCEEDED,
            5,
            RunTrigger.SCHEDULE,
        )
        assert older.error is None
        assert older.earlier_error == "failed at attempt 4"

    def test_a_page_cut_at_its_limit_drops_the_oldest_slot(self) -> None:
        """Its first attempts may lie on the next page: it is left out rather than shown wrong."""
        runs = [run(SLOT, 2, "failed"), run(SLOT + timedelta(hours=1))]
        assert len(charts.slots_of(runs, complete=True)) == 2
        assert [slot.scheduled_for for slot in charts.slots_of(runs, complete=False)] == [
            SLOT + timedelta(hours=1)
        ]

    def test_lateness_is_the_first_attempts(self) -> None:
        """A retry a minute later says nothing of lateness; a slot without attempt 1 has none."""
        slot = charts.slots_of([run(SLOT, 1, "failed", late_s=0.2), run(SLOT, 2, late_s=60)])[0]
        assert slot.lateness_ms == 200
        assert charts.slots_of([run(SLOT, 2, late_s=60)])[0].lateness_ms is None


class TestOutcomeStrip:
    """The jobs page's strip: one cell per slot."""

    def test_one_cell_per_outcome_and_the_counts_in_words(self) -> None:
        """Three slots, three cells; the tooltip counts them."""
        svg = str(charts.outcome_strip([RunStatus.FAILED, RunStatus.SUCCEEDED, RunStatus.TIMED_OUT]))
        assert 'data-slots="3"' in svg
        assert svg.count("M") == 3
        assert "last 3 slots: 1 failed, 1 succeeded, 1 timed out" in svg

    def test_no_runs_is_said(self) -> None:
        """An empty strip says there were no runs."""
        assert "no runs yet" in str(charts.outcome_strip([]))


class TestDurationChart:
    """Duration drawn as duration: a log scale with labelled ticks, and no bar too small to see."""

    def test_a_3_ms_run_does_not_fill_the_chart_and_a_0_ms_failure_shows(self) -> None:
        """Beside a 2 s run a 3 ms one is a short bar; a 0 ms failure is a stub of the minimum height."""
        slots = charts.slots_of([
            run(SLOT, duration_ms=3), run(SLOT + timedelta(hours=1), duration_ms=2000),
            run(SLOT + timedelta(hours=2), status="failed", duration_ms=0),
        ])  # fmt: skip
        svg = str(charts.duration_chart(slots, height=120))
        heights = bar_heights(svg)
        plot = 120 - 12
        assert heights["2000"] > 0.7 * plot
        assert heights["3"] < 0.2 * plot
        assert heights["0"] == 3.0
        assert 'class="s-failed" data-ms="0"' in svg

    def test_alone_a_3_ms_run_is_still_small(self) -> None:
        """With no longer run beside it the scale still runs to 1 s: 3 ms is not the top of the chart."""
        svg = str(charts.duration_chart(charts.slots_of([run(SLOT, duration_ms=3)]), height=120))
        assert bar_heights(svg)["3"] < 0.2 * (120 - 12)

    def test_the_y_axis_is_labelled_with_units(self) -> None:
        """Ticks at each power of ten from 1 ms to the top, written with their units."""
        svg = str(charts.duration_chart(charts.slots_of([run(SLOT, duration_ms=42_000)])))
        ticks = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
        assert ticks == ["1 ms", "10 ms", "100 ms", "1 s", "10 s", "100 s"]
        assert "log scale" in svg
        assert "2026-12-03 09:00 UTC" in svg

    def test_a_slot_retried_is_one_bar(self) -> None:
        """Five attempts, one bar, its tooltip saying how many."""
        slots = charts.slots_of([run(SLOT, n, "failed") for n in range(1, 5)] + [run(SLOT, 5)])
        svg = str(charts.duration_chart(slots))
        assert svg.count("<rect") == 1
        assert "succeeded after 5 attempts" in svg


class TestLatenessChart:
    """Lateness of first attempts of scheduled slots only, on a linear axis with units."""

    def test_retry_backoff_is_not_lateness(self) -> None:
        """Retries starting minutes late leave the axis at the first attempts' scale."""
        runs = []
        for hour in range(6):
            slot = SLOT + timedelta(hours=hour)
            runs += [run(slot, 1, "failed", late_s=0.03), run(slot, 2, late_s=120)]
        svg = str(charts.lateness_chart(charts.slots_of(runs)))
        ticks = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
        assert ticks == ["0 ms", "25 ms", "50 ms"]
        assert "(6 slots scheduled)" in svg

    def test_manual_runs_are_left_out(self) -> None:
        """A manual run's wait is not a scheduled slot's lateness."""
        runs = [run(SLOT, late_s=0.01), run(SLOT + timedelta(hours=1), late_s=30, trigger="manual")]
        svg = str(charts.lateness_chart(charts.slots_of(runs)))
        assert "(1 slot scheduled)" in svg
        assert re.findall(r'text-anchor="end">([^<]+)</text>', svg)[-1] == "10 ms"

    def test_axis_tops(self) -> None:
        """Tops are 1, 2 or 5 times a power of ten, at least 10 ms; durations start at 1 s."""
        assert [charts.linear_top_ms(v) for v in (0, 11, 26, 420, 1800)] == [10, 20, 50, 500, 2000]
        assert [charts.log_top_ms(v) for v in (0, 3, 999, 1001, 42_000)] == [
            1000,
            1000,
            1000,
            10_000,
            100_000,
        ]
