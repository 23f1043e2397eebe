"""Charts drawn on the server as inline SVG: no script, no asset, colours from the stylesheet."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

from scheduler.domain.models import Run, RunStatus

_STRIP_CELL = 5
_STRIP_HEIGHT = 14
_STRIP_RUNS = 50


def outcome_strip(outcomes: Sequence[RunStatus]) -> Markup:
    """The last 50 outcomes as a strip of cells, oldest left; empty slots stay grey.

    One tooltip for the strip (the counts), not one per cell: the jobs page draws 50 strips.
    """
    # One path per status rather than a rect per run: 50 strips on a page stay a few KiB.
    shapes: dict[str, list[str]] = {}
    for index, status in enumerate(list(outcomes)[-_STRIP_RUNS:]):
        shapes.setdefault(status.value, []).append(
            f"M{index * _STRIP_CELL} 0h{_STRIP_CELL - 1}v{_STRIP_HEIGHT}h-{_STRIP_CELL - 1}z"
        )
    cells = [f'<path class="s-{status}" d="{"".join(parts)}"/>' for status, parts in shapes.items()]
    width = _STRIP_RUNS * _STRIP_CELL
    summary = ", ".join(f"{count} {name}" for name, count in _counts(outcomes)) or "no runs yet"
    return Markup(  # noqa: S704 - every interpolated value above is a number or an enum value
        f'<svg class="strip" width="{width}" height="{_STRIP_HEIGHT}" viewBox="0 0 {width} {_STRIP_HEIGHT}" '
        f'role="img" aria-label="last runs: {escape(summary)}"><title>{escape(summary)}</title>'
        f'<rect x="0" y="0" width="{width}" height="{_STRIP_HEIGHT}" class="strip-bg"/>{"".join(cells)}</svg>'
    )


def _counts(outcomes: Sequence[RunStatus]) -> list[tuple[str, int]]:
    found: dict[str, int] = {}
    for status in outcomes:
        found[status.value] = found.get(status.value, 0) + 1
    return sorted(found.items(), key=lambda item: -item[1])


def _ms(value: float) -> str:
    if value >= 60_000:  # noqa: PLR2004 - a minute
        return f"{value / 60_000:.1f} min"
    if value >= 1000:  # noqa: PLR2004 - a second
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms"


def timeline(runs: Sequence[Run], *, width: int = 720, height: int = 90) -> Markup:
    """Runs left (oldest) to right as bars: colour by status, height by duration (square root)."""
    ordered = sorted(runs, key=lambda run: (run.scheduled_for, run.attempt))
    if not ordered:
        return Markup('<p class="muted">No runs yet.</p>')
    longest = max((run.duration_ms or 0) for run in ordered) or 1
    step = width / len(ordered)
    bars: list[str] = []
    for index, run in enumerate(ordered):
        duration = run.duration_ms or 0
        bar = max(3.0, (duration / longest) ** 0.5 * (height - 4))
        label = escape(f"{run.scheduled_for:%Y-%m-%d %H:%M:%S} UTC · {run.status.value} · {_ms(duration)}")
        bars.append(
            f'<a href="/ui/runs/{run.id}"><rect x="{index * step:.1f}" y="{height - bar:.1f}" '
            f'width="{max(step - 1, 1):.1f}" height="{bar:.1f}" class="s-{run.status.value}">'
            f"<title>{label}</title></rect></a>"
        )
    return Markup(  # noqa: S704 - numbers, enum values and escaped labels only
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" height="{height}" '
        f'preserveAspectRatio="none" role="img" aria-label="runs timeline">{"".join(bars)}</svg>'
        f'<p class="axis"><span>{ordered[0].scheduled_for:%Y-%m-%d %H:%M} UTC</span>'
        f"<span>longest {_ms(longest)}</span>"
        f"<span>{ordered[-1].scheduled_for:%Y-%m-%d %H:%M} UTC</span></p>"
    )


def _polyline(  # noqa: PLR0917 - the chart's frame, passed along by its one caller
    points: Sequence[tuple[datetime, float]],
    start: datetime,
    span_s: float,
    top: float,
    width: int,
    height: int,
    css: str,
) -> str:
    scale = (height - 6) / top
    coords = " ".join(
        f"{(moment - start).total_seconds() / span_s * width:.1f},{height - value * scale - 3:.1f}"
        for moment, value in points
    )
    return f'<polyline points="{coords}" class="{css}" fill="none"/>'


def lateness_and_duration(runs: Sequence[Run], *, width: int = 720, height: int = 140) -> Markup:
    """Lateness (started_at - scheduled_for) and duration of each started run, over slot time."""
    started = sorted(
        (run for run in runs if run.started_at is not None), key=lambda run: (run.scheduled_for, run.attempt)
    )
    if len(started) < 2:  # noqa: PLR2004 - a line needs two points
        return Markup('<p class="muted">Not enough started runs to draw.</p>')
    lateness = [
        (run.scheduled_for, max(0.0, (run.started_at - run.scheduled_for).total_seconds() * 1000))
        for run in started
        if run.started_at is not None
    ]
    durations = [(run.scheduled_for, float(run.duration_ms or 0)) for run in started]
    start = started[0].scheduled_for
    span_s = max((started[-1].scheduled_for - start).total_seconds(), 1.0)
    top = max(*(value for _, value in lateness), *(value for _, value in durations), 1.0)
    grid = "".join(
        f'<line x1="0" x2="{width}" y1="{height - fraction * (height - 6) - 3:.1f}" '
        f'y2="{height - fraction * (height - 6) - 3:.1f}" class="grid"/>'
        for fraction in (0.0, 0.5, 1.0)
    )
    return Markup(  # noqa: S704 - numbers only
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" height="{height}" '
        f'preserveAspectRatio="none" role="img" aria-label="lateness and duration over time">{grid}'
        + _polyline(lateness, start, span_s, top, width, height, "line-lateness")
        + _polyline(durations, start, span_s, top, width, height, "line-duration")
        + "</svg>"
        f'<p class="axis"><span>{start:%Y-%m-%d %H:%M} UTC</span>'
        f'<span><i class="key key-lateness"></i>lateness <i class="key key-duration"></i>duration '
        f"· top {_ms(top)}</span><span>{started[-1].scheduled_for:%Y-%m-%d %H:%M} UTC</span></p>"
    )
