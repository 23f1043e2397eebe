"""Trying a schedule out: its next fire times, computed as a job with it would fire, storing nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from scheduler.domain.fields import EntrySpec, ExclusionsSpec
from scheduler.domain.models import JobValues, LogAction, Misfire, OverlapPolicy, RetryPolicy
from scheduler.domain.schedule import Timing
from scheduler.domain.validation import check_instant
from scheduler.operations import timing
from scheduler.operations.errors import InvalidError
from scheduler.operations.jobs import fire_times, first_fire

Fires = list[tuple[datetime, tuple[int, ...]]]


def preview(
    *,
    schedule: str | None,
    timezone: str,
    after: datetime | None,
    count: int,
    now: datetime,
    schedules: Sequence[EntrySpec] | None = None,
    exclusions: ExclusionsSpec | None = None,
) -> tuple[Fires, Fires]:
    """The next ``count`` fire times after ``after`` (default ``now``), and those exclusions take away.

    The schedule is one expression in a zone, or several entries, as a job holds them. `@every`
    counts from ``after`` as it counts from a new job's creation. The fires taken away are those
    the exclusions remove between ``after`` and the last fire returned.
    """
    if errors := check_instant("after", after):
        raise InvalidError.of(errors)
    start = after or now
    values = _scratch_job(start)
    changes = {"schedule": schedule, "timezone": timezone, "schedules": schedules, "exclusions": exclusions}
    timing.assign(values, changes, before=None, now=start)
    job_timing = Timing.of(values)
    first_fire(job_timing, start)
    fires = fire_times(job_timing, start, count)
    if job_timing.exclusions is None or not fires:
        return fires, []
    last = fires[-1][0]
    bare = msgspec.structs.replace(job_timing, exclusions=None)
    kept = {moment for moment, _ in fires}
    taken: Fires = []
    for moment, sources in fire_times(bare, start, 10 * count):
        if moment > last or len(taken) >= count:
            break
        if moment not in kept:
            taken.append((moment, sources))
    return fires, taken


def _scratch_job(now: datetime) -> JobValues:
    """A job that is never stored: what the preview's timing is assigned to."""
    return JobValues(
        id=timing.PREVIEW_JOB_ID,
        namespace="",
        name="preview",
        description="",
        schedule="",
        timezone="UTC",
        start_at=None,
        end_at=None,
        action=LogAction(),
        timeout_s=1,
        retry=RetryPolicy(),
        misfire=Misfire(),
        overlap=OverlapPolicy.SKIP,
        paused=False,
        labels={},
        next_run_at=None,
        anchor_at=now,
    )
