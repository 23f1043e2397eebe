"""Charts drawn on the server as inline SVG, one mark per slot: no script, colours from the stylesheet.

A slot is one scheduled (or triggered) time of a job and every attempt at it; the charts and the
outcome strip show each slot once, as its newest attempt ended, so a run retried four times is one
bar. Axes are labelled with their units: durations on a log scale (a 3 ms run stays small beside a
2 s one, and a 0 ms failure still shows as a stub), lateness on a linear one from zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

from scheduler.domain.models import Run, RunStatus, RunTrigger

_STRIP_CELL = 5
_STRIP_HEIGHT = 14
STRIP_SLOTS = 50
"""Slots the jobs page's outcome strip shows."""

_PLOT_WIDTH = 720  # viewBox units; the plot stretches to its box, the y axis beside it does not
_AXIS_WIDTH = 56
_PAD = 6
_MIN_BAR = 3.0  # a 0 ms run, or one not finished, still shows
_SCHEDULED = (RunTrigger.SCHEDULE, RunTrigger.CATCHUP)


@dataclass(frozen=True, slots=True)
class Slot:
    """One slot of a job: its attempts, first to last."""

    attempts: tuple[Run, ...]

    @property
    def scheduled_for(self) -> datetime:
        """The slot's time."""
        return self.attempts[0].scheduled_for

    @property
    def last(self) -> Run:
        """The newest attempt: the slot's outcome."""
        return self.attempts[-1]

    @property
    def first(self) -> Run | None:
        """Attempt 1, if it is among the runs read (a long chain may start on an older page)."""
        return self.attempts[0] if self.attempts[0].attempt == 1 else None

    @property
    def status(self) -> RunStatus:
        """How the slot stands: its newest attempt's status."""
        return self.last.status

    @property
    def trigger(self) -> RunTrigger:
        """Why the slot exists: its first attempt's trigger."""
        first = self.first
        return first.trigger if first is not None else self.last.trigger

    @property
    def lateness_ms(self) -> float | None:
        """How late attempt 1 started (retries wait their backoff on purpose: that is not lateness)."""
        first = self.first
        if first is None or first.started_at is None:
            return None
        return max(0.0, (first.started_at - first.scheduled_for).total_seconds() * 1000)

    @property
    def error(self) -> str | None:
        """The newest attempt's error: why the slot stands as it does."""
        return self.last.error

    @property
    def earlier_error(self) -> str | None:
        """The newest error of the attempts before the last (what a retry got past)."""
        for run in reversed(self.attempts[:-1]):
            if run.error:
                return run.error
        return None


def slots_of(runs: Sequence[Run], *, complete: bool = True) -> list[Slot]:
    """Group one job's runs by slot, newest slot first.

    With ``complete`` False (the runs were one page, cut at a limit), the oldest slot is dropped:
    its earlier attempts may lie past the cut.
    """
    grouped: dict[datetime, list[Run]] = {}
    for run in runs:
        grouped.setdefault(run.scheduled_for, []).append(run)
    slots = [
        Slot(tuple(sorted(attempts, key=lambda run: run.attempt)))
        for _, attempts in sorted(grouped.items(), key=lambda item: item[0], reverse=True)
    ]
    return slots[:-1] if not complete and len(slots) > 1 else slots


# ----------------------------------------------------------------------------------- the strip


def outcome_strip(outcomes: Sequence[RunStatus]) -> Markup:
    """The outcomes of the last 50 slots as a strip of cells, oldest left; empty places stay grey.

    One tooltip for the strip (the counts), not one per cell: the jobs page draws 50 strips.
    """
    shown = list(outcomes)[-STRIP_SLOTS:]
    # One path per status rather than a rect per slot: 50 strips on a page stay a few KiB.
    shapes: dict[str, list[str]] = {}
    for index, status in enumerate(shown):
        shapes.setdefault(status.value, []).append(
            f"M{index * _STRIP_CELL} 0h{_STRIP_CELL - 1}v{_STRIP_HEIGHT}h-{_STRIP_CELL - 1}z"
        )
    cells = [f'<path class="s-{status}" d="{"".join(parts)}"/>' for status, parts in shapes.items()]
    width = STRIP_SLOTS * _STRIP_CELL
    counts = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in _counts(shown))
    summary = f"last {len(shown)} slots: {counts}" if shown else "no runs yet"
    return Markup(  # noqa: S704 - every interpolated value is a number, an enum value or escaped
        f'<svg class="strip" width="{width}" height="{_STRIP_HEIGHT}" viewBox="0 0 {width} {_STRIP_HEIGHT}" '
        f'role="img" aria-label="{escape(summary)}" data-slots="{len(shown)}">'
        f"<title>{escape(summary)}</title>"
        f'<rect x="0" y="0" width="{width}" height="{_STRIP_HEIGHT}" class="strip-bg"/>{"".join(cells)}</svg>'
    )


def _counts(outcomes: Sequence[RunStatus]) -> list[tuple[str, int]]:
    found: dict[str, int] = {}
    for status in outcomes:
        found[status.value] = found.get(status.value, 0) + 1
    return sorted(found.items(), key=lambda item: -item[1])


# ------------------------------------------------------------------------------------- scales


def ms_text(value: float) -> str:
    """A duration in milliseconds as the axes and tooltips write it."""
    if value >= 60_000:  # noqa: PLR2004 - a minute
        minutes = value / 60_000
        return f"{minutes:.0f} min" if minutes >= 10 or minutes == int(minutes) else f"{minutes:.1f} min"  # noqa: PLR2004
    if value >= 1000:  # noqa: PLR2004 - a second
        seconds = value / 1000
        return f"{seconds:.0f} s" if seconds >= 10 or seconds == int(seconds) else f"{seconds:.1f} s"  # noqa: PLR2004
    return f"{value:.0f} ms"


def log_top_ms(longest: float) -> float:
    """The top of a duration axis: a power of ten at or above the longest, and at least 1 s."""
    return max(1000.0, 10.0 ** math.ceil(math.log10(max(longest, 1.0))))


def log_height(value: float, top: float, span: float) -> float:
    """The height of a bar of ``value`` ms on a log scale from 1 ms (0) to ``top`` (``span``)."""
    return max(_MIN_BAR, math.log10(max(value, 1.0)) / math.log10(top) * span)


def linear_top_ms(highest: float) -> float:
    """The top of a lateness axis: 1, 2 or 5 times a power of ten at or above the highest, at least 10 ms."""
    highest = max(highest, 10.0)
    power = 10 ** math.floor(math.log10(highest))
    for step in (1, 2, 5, 10):
        if highest <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop ends at 10, which always holds


def _frame(
    plot: str, ticks: Sequence[tuple[float, str]], *, height: int, label: str, caption: str, x_axis: str
) -> Markup:
    """A chart: the y axis (fixed width, its tick labels) beside the plot (stretching), the x axis below."""
    axis = "".join(
        f'<text x="{_AXIS_WIDTH - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>'
        f'<line x1="{_AXIS_WIDTH - 4}" x2="{_AXIS_WIDTH}" y1="{y:.1f}" y2="{y:.1f}" class="tick"/>'
        for y, text in ticks
    )
    grid = "".join(
        f'<line x1="0" x2="{_PLOT_WIDTH}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>' for y, _ in ticks
    )
    return Markup(  # noqa: S704 - numbers, enum values and escaped text only
        f'<figure class="chart-box" aria-label="{escape(label)}">'
        f'<figcaption class="small muted">{escape(caption)}</figcaption>'
        f'<div class="chart-frame">'
        f'<svg class="y-axis" width="{_AXIS_WIDTH}" height="{height}" viewBox="0 0 {_AXIS_WIDTH} {height}" '
        f'aria-hidden="true">{axis}</svg>'
        f'<svg class="chart" viewBox="0 0 {_PLOT_WIDTH} {height}" width="100%" height="{height}" '
        f'preserveAspectRatio="none" role="img" aria-label="{escape(label)}">{grid}{plot}</svg>'
        f"</div>{x_axis}</figure>"
    )


def _slots(count: int) -> str:
    return f"{count} slot" + ("" if count == 1 else "s")


def _x_axis(first: datetime, last: datetime, title: str) -> str:
    return (
        f'<p class="axis"><span>{first:%Y-%m-%d %H:%M} UTC</span>'
        f'<span class="axis-title">{escape(title)}</span>'
        f"<span>{last:%Y-%m-%d %H:%M} UTC</span></p>"
    )


# ------------------------------------------------------------------------------------- charts


def duration_chart(slots: Sequence[Slot], *, height: int = 120) -> Markup:
    """One bar per slot, oldest left: colour is its outcome, height its newest attempt's duration (log)."""
    ordered = sorted(slots, key=lambda slot: slot.scheduled_for)
    if not ordered:
        return Markup('<p class="muted">No runs yet.</p>')
    longest = max(float(slot.last.duration_ms or 0) for slot in ordered)
    top = log_top_ms(longest)
    span = height - 2 * _PAD
    step = _PLOT_WIDTH / len(ordered)
    bars: list[str] = []
    for index, slot in enumerate(ordered):
        duration = slot.last.duration_ms
        bar = log_height(float(duration or 0), top, span)
        attempts = len(slot.attempts)
        label = escape(
            f"{slot.scheduled_for:%Y-%m-%d %H:%M:%S} UTC · {slot.status.value.replace('_', ' ')}"
            + (f" after {attempts} attempts" if attempts > 1 else "")
            + (f" · {ms_text(duration)}" if duration is not None else " · no duration")
        )
        bars.append(
            f'<a href="/ui/runs/{slot.last.id}"><rect x="{index * step:.1f}" y="{height - _PAD - bar:.1f}" '
            f'width="{max(step - 1, 1):.1f}" height="{bar:.1f}" class="s-{slot.status.value}" '
            f'data-ms="{duration if duration is not None else ""}"><title>{label}</title></rect></a>'
        )
    decades = round(math.log10(top))
    # Decades read best in one unit each: 1 ms … 100 ms, then 1 s, 10 s, 100 s, 1000 s.
    ticks = [
        (height - _PAD - power / decades * span, f"{10**power} ms" if power < 3 else f"{10 ** (power - 3)} s")  # noqa: PLR2004
        for power in range(decades + 1)
    ]
    return _frame(
        "".join(bars),
        ticks,
        height=height,
        label="duration of each slot's newest attempt",
        caption=f"Duration of the last {_slots(len(ordered))} (log scale; colour: outcome)",
        x_axis=_x_axis(ordered[0].scheduled_for, ordered[-1].scheduled_for, "slot time →"),
    )


def lateness_chart(slots: Sequence[Slot], *, height: int = 120) -> Markup:
    """How late each scheduled slot's first attempt started, over slot time (no retries, no manual runs)."""
    points = sorted(
        (slot.scheduled_for, late)
        for slot in slots
        if slot.trigger in _SCHEDULED and (late := slot.lateness_ms) is not None
    )
    if not points:
        return Markup('<p class="muted">No scheduled run has started yet.</p>')
    start, end = points[0][0], points[-1][0]
    span_s = max((end - start).total_seconds(), 1.0)
    top = linear_top_ms(max(late for _, late in points))
    span = height - 2 * _PAD

    def place(moment: datetime, late: float) -> str:
        x = (moment - start).total_seconds() / span_s * _PLOT_WIDTH if len(points) > 1 else _PLOT_WIDTH / 2
        return f"{x:.1f},{height - _PAD - late / top * span:.1f}"

    coords = " ".join(place(moment, late) for moment, late in points)
    if len(points) == 1:  # a line needs two points: draw the one as a short dash
        x_text, y_text = coords.split(",")
        coords = f"{float(x_text) - 4:.1f},{y_text} {float(x_text) + 4:.1f},{y_text}"
    plot = f'<polyline points="{coords}" class="line-lateness" fill="none"/>'
    ticks = [(height - _PAD - fraction * span, ms_text(fraction * top)) for fraction in (0.0, 0.5, 1.0)]
    return _frame(
        plot,
        ticks,
        height=height,
        label="lateness of first attempts",
        caption=f"Lateness: how long after its slot attempt 1 started ({_slots(len(points))} scheduled)",
        x_axis=_x_axis(start, end, "slot time →"),
    )
