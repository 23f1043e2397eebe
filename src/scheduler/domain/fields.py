"""The types of a job's settable fields, with their limits, and the shape of a change to them.

The API's wire shapes and the console's edit form decode into these, so a limit is written once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from scheduler.domain import names
from scheduler.domain.models import Action, Misfire, OverlapPolicy, RetryPolicy

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
