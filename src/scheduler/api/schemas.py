"""Wire shapes of the HTTP API (create, update, read); the checks beyond types are `domain.validation`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from scheduler.domain import names
from scheduler.domain.fields import Description, Instant, Name, ScheduleText, TimeoutS, Zone
from scheduler.domain.models import (
    Action,
    Job,
    LastRun,
    Misfire,
    OverlapPolicy,
    RetryPolicy,
    Run,
    RunStatus,
    RunTrigger,
    project,
)

NAME_PATTERN = names.JOB_NAME_PATTERN


class JobCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new job."""

    name: Name
    schedule: ScheduleText
    action: Action
    description: Description = ""
    timezone: Zone = "UTC"
    start_at: Instant | None = None
    end_at: Instant | None = None
    timeout_s: TimeoutS = 30
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    misfire: Misfire = msgspec.field(default_factory=Misfire)
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    paused: bool = False
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class JobOut(msgspec.Struct, kw_only=True):
    """A job as the API shows it."""

    id: UUID
    namespace: str
    name: str
    description: str
    schedule: str
    timezone: str
    start_at: datetime | None
    end_at: datetime | None
    action: Action
    timeout_s: int
    retry: RetryPolicy
    misfire: Misfire
    overlap: OverlapPolicy
    paused: bool
    labels: dict[str, str]
    next_run_at: datetime | None
    last_run: LastRun | None
    created_at: datetime
    updated_at: datetime
    version: int
    consecutive_failures: int
    """How many of the job's newest finished runs in a row did not succeed (each attempt counts)."""

    @classmethod
    def of(cls, job: Job) -> JobOut:
        """Project a stored job onto its wire shape."""
        return project(cls, job)


class JobPage(msgspec.Struct):
    """One page of jobs; pass next_cursor back as `cursor` for the next (null on the last page)."""

    items: list[JobOut]
    next_cursor: str | None


class RunOut(msgspec.Struct, kw_only=True):
    """A run as the API shows it."""

    id: UUID
    job_id: UUID
    job_name: str | None
    """The job's name; null once the job is deleted (its history stays until retention)."""
    scheduled_for: datetime
    trigger: RunTrigger
    attempt: int
    status: RunStatus
    runner: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    http_status: int | None
    output: str | None
    error: str | None

    @classmethod
    def of(cls, run: Run, job_name: str | None) -> RunOut:
        """Project a stored run, and its job's name, onto its wire shape."""
        return project(cls, run, job_name=job_name)

    @classmethod
    def page(cls, runs: list[Run], names: dict[UUID, str]) -> list[RunOut]:
        """Project a page of runs, each with its job's name."""
        return [cls.of(run, names.get(run.job_id)) for run in runs]


class RunPage(msgspec.Struct):
    """One page of a job's runs, newest first."""

    items: list[RunOut]
    next_cursor: str | None


class PreviewIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A schedule to try out without storing it."""

    schedule: ScheduleText
    timezone: Zone = "UTC"
    after: Instant | None = None
    count: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10


class NextRuns(msgspec.Struct):
    """Upcoming fire times."""

    next: list[datetime]


class Health(msgspec.Struct):
    """Liveness or readiness."""

    status: str


MAX_APPLY_BODY = 32 * 1024 * 1024
"""The body limit of POST /jobs/apply: a set of 20,000 jobs fits."""


class Selector(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which stored jobs belong to a declared set: those whose labels hold this one."""

    label: Annotated[str, msgspec.Meta(min_length=3, max_length=320, description="`key=value`.")]


class ApplyIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A declared set of jobs to make the namespace match, in one transaction."""

    jobs: Annotated[list[JobCreate], msgspec.Meta(max_length=20_000)]
    selector: Selector | None = None
    prune: bool = False
    """Delete the jobs the selector matches that the set does not declare."""
    dry_run: bool = False
    """Answer the plan and write nothing."""


class Applied(msgspec.Struct, kw_only=True):
    """What an apply did (or, for a dry run, would do) to one job."""

    name: str
    change: str
    """`created`, `updated`, `unchanged` or `deleted`."""
    fields: list[str]
    """The fields an update changes."""
    id: UUID | None
    version: int | None


class ApplyOut(msgspec.Struct, kw_only=True):
    """The plan of an apply, job by job in the set's order (deletions last), and its counts."""

    dry_run: bool
    items: list[Applied]
    created: int
    updated: int
    unchanged: int
    deleted: int
