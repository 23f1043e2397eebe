"""The types of a job's settable fields, with their limits, and the shape of a change to them.

The API's wire shapes and the console's edit form decode into these, so a limit is written once.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from uuid import UUID

import msgspec

from scheduler.domain import names
from scheduler.domain.models import Action, Misfire, Notify, OverlapPolicy, RetryPolicy

Name = Annotated[str, msgspec.Meta(pattern=names.JOB_NAME_PATTERN, description="Unique in the namespace.")]
Description = Annotated[str, msgspec.Meta(max_length=1024)]
ScheduleText = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        description="Cron (5 fields, or 6 with leading seconds), a macro like @daily, "
        "`@every 1h30m`, or `@at 2026-12-01T09:00:00Z`.",
    ),
]
Zone = Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="IANA time zone name.")]
Instant = Annotated[datetime, msgspec.Meta(tz=True)]
TimeoutS = Annotated[int, msgspec.Meta(ge=1, le=3600)]


CalendarText = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=256,
        description="A 5-field cron expression; a fire whose local minute it matches does not happen.",
    ),
]


class EntrySpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One schedule entry as its owner writes it."""

    schedule: ScheduleText
    timezone: Zone | None = None
    """The IANA zone the expression is read in; absent: the job's `timezone`."""
    start_at: Instant | None = None
    end_at: Instant | None = None
    paused: bool = False
    """A paused entry adds no fire times; the job's other entries go on."""
    id: UUID | None = None
    """Keeps an existing entry's id in a whole list; absent: matched by content, else a new id."""


class ExclusionsSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The dates and calendars on which a job does not fire, whatever its schedules say."""

    dates: Annotated[list[date], msgspec.Meta(max_length=1000)] = msgspec.field(default_factory=list)
    """Local dates (`2026-12-25`) on which the job does not fire at all."""
    calendars: Annotated[list[CalendarText], msgspec.Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )
    """5-field cron expressions: a fire whose local minute matches one does not happen."""
    timezone: Zone | None = None
    """The zone dates and calendars are read in; absent: the zone of the job's first schedule entry."""


EntryList = Annotated[list[EntrySpec], msgspec.Meta(min_length=1, max_length=20)]


class JobPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A partial update: only the fields present change; `null` clears start_at or end_at."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    schedule: ScheduleText | msgspec.UnsetType = msgspec.UNSET
    action: Action | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    timezone: Zone | msgspec.UnsetType = msgspec.UNSET
    start_at: Instant | msgspec.UnsetType | None = msgspec.UNSET
    end_at: Instant | msgspec.UnsetType | None = msgspec.UNSET
    timeout_s: TimeoutS | msgspec.UnsetType = msgspec.UNSET
    retry: RetryPolicy | msgspec.UnsetType = msgspec.UNSET
    misfire: Misfire | msgspec.UnsetType = msgspec.UNSET
    overlap: OverlapPolicy | msgspec.UnsetType = msgspec.UNSET
    paused: bool | msgspec.UnsetType = msgspec.UNSET
    labels: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    schedules: EntryList | msgspec.UnsetType = msgspec.UNSET
    """The whole list of schedule entries; replaces the job's (send it, not `schedule`, for several)."""
    exclusions: ExclusionsSpec | msgspec.UnsetType | None = msgspec.UNSET
    notify: Notify | msgspec.UnsetType | None = msgspec.UNSET
    """Failure and recovery notifications as a whole; `null` turns them off."""
