"""Wire shapes of the HTTP API (create, update, read); the checks beyond types are `domain.validation`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from functools import lru_cache
from typing import Annotated
from uuid import UUID

import msgspec

from scheduler.domain import names
from scheduler.domain.fields import (
    Description,
    EntryList,
    ExclusionsSpec,
    Instant,
    Name,
    ScheduleText,
    TimeoutS,
    Zone,
)
from scheduler.domain.models import (
    STORED_AS_JSON,
    Action,
    Job,
    LastRun,
    Misfire,
    Notify,
    OverlapPolicy,
    RetryPolicy,
    Run,
    RunStatus,
    RunTrigger,
    SentRequest,
    project,
)
from scheduler.domain.schedule import Entry
from scheduler.operations.timing import first_entry_id

NAME_PATTERN = names.JOB_NAME_PATTERN

# Every read of a job made with one schedule shows that entry's id, a uuid5 of the job's id: a
# page of 50 paid for 50 of them. Ids never change, so a bounded cache answers repeated reads.
_first_entry_id = lru_cache(maxsize=16_384)(first_entry_id)


class JobCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new job: its `schedule` (with `timezone`, `start_at`, `end_at`), or several as `schedules`."""

    name: Name
    action: Action
    schedule: ScheduleText | None = None
    """Required unless `schedules` is given; with it, may only repeat the first entry's."""
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
    notify: Notify | None = None
    """Failure and recovery notifications, and pausing after failures; null for neither."""
    schedules: EntryList | None = None
    """1 to 20 schedule entries; the job fires at the union of their times, once per instant."""
    exclusions: ExclusionsSpec | None = None


class ScheduleEntryOut(msgspec.Struct, kw_only=True):
    """One schedule entry of a job, as the API shows it."""

    id: UUID
    schedule: str
    timezone: str
    start_at: datetime | None
    end_at: datetime | None
    paused: bool

    @classmethod
    def of(cls, entry: Entry) -> ScheduleEntryOut:
        """Project a stored entry onto its wire shape."""
        return project(cls, entry)


class ScheduleEntryPage(msgspec.Struct):
    """Every schedule entry of a job, in its order (the first is the one `schedule` repeats)."""

    items: list[ScheduleEntryOut]


class ExclusionsOut(msgspec.Struct, kw_only=True):
    """When a job does not fire, as stored (dates sorted, the zone written out)."""

    dates: list[date]
    calendars: list[str]
    timezone: str


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
    schedules: list[ScheduleEntryOut]
    """Every schedule entry; the first is the one `schedule`, `timezone`, `start_at` and `end_at` show."""
    exclusions: ExclusionsOut | None
    notify: Annotated[Notify | None, STORED_AS_JSON]
    last_run: LastRun | None
    created_at: datetime
    updated_at: datetime
    version: int
    consecutive_failures: int
    """How many of the job's newest finished runs in a row did not succeed (each attempt counts)."""
    failed_slots: int
    """How many of the job's newest slots in a row failed on their final attempt (what notify counts)."""

    @classmethod
    def of(cls, job: Job) -> JobOut:
        """Project a stored job onto its wire shape."""
        out = project(cls, job)
        if not out.schedules:
            # A job made with one schedule stores no entry list: its one entry is shown from the
            # job's own fields, as `entries_of` makes it, without building the Entry in between.
            out.schedules = [
                ScheduleEntryOut(
                    id=_first_entry_id(job.id),
                    schedule=job.schedule,
                    timezone=job.timezone,
                    start_at=job.start_at,
                    end_at=job.end_at,
                    paused=False,
                )
            ]
        return out


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
    request: SentRequest | msgspec.UnsetType | None = msgspec.UNSET
    """What an HTTP attempt sent: method, URL, headers and the first 4 KiB of the body, with
    credentials and signatures masked by the runner before they were stored. Only in
    `GET /runs/{id}` (null for log actions, rescued runs and runs recorded before it was kept);
    listings leave it out."""
    response_headers: dict[str, str] | msgspec.UnsetType | None = msgspec.UNSET
    """The response's headers, masked and capped like the request's; only in `GET /runs/{id}`."""

    @classmethod
    def of(
        cls,
        run: Run,
        job_name: str | None,
        request: SentRequest | msgspec.UnsetType | None = msgspec.UNSET,
        response_headers: dict[str, str] | msgspec.UnsetType | None = msgspec.UNSET,
    ) -> RunOut:
        """Project a stored run, its job's name and (for one run) what it sent, onto its wire shape."""
        return project(cls, run, job_name=job_name, request=request, response_headers=response_headers)

    @classmethod
    def page(cls, runs: list[Run], names: dict[UUID, str]) -> list[RunOut]:
        """Project a page of runs, each with its job's name."""
        return [cls.of(run, names.get(run.job_id)) for run in runs]


class RunPage(msgspec.Struct):
    """One page of a job's runs, newest first."""

    items: list[RunOut]
    next_cursor: str | None


class PreviewIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A schedule, or several entries and exclusions, to try out without storing them."""

    schedule: ScheduleText | None = None
    """Required unless `schedules` is given."""
    timezone: Zone = "UTC"
    after: Instant | None = None
    count: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    schedules: EntryList | None = None
    exclusions: ExclusionsSpec | None = None


class FireOut(msgspec.Struct, kw_only=True):
    """One upcoming fire time, and the schedule entries (indexes into `schedules`) due at it."""

    at: datetime
    entries: list[int]


class NextRuns(msgspec.Struct, kw_only=True):
    """Upcoming fire times; `fires` says which entries each comes from."""

    next: list[datetime]
    fires: list[FireOut]
    excluded: list[FireOut] = msgspec.field(default_factory=list)
    """Fire times among these that exclusions take away (a preview only)."""

    @classmethod
    def of(
        cls,
        fires: Sequence[tuple[datetime, tuple[int, ...]]],
        excluded: Sequence[tuple[datetime, tuple[int, ...]]] = (),
    ) -> NextRuns:
        """Fire times with their entries' indexes, as the operations give them."""
        return cls(
            next=[moment for moment, _ in fires],
            fires=[FireOut(at=moment, entries=list(sources)) for moment, sources in fires],
            excluded=[FireOut(at=moment, entries=list(sources)) for moment, sources in excluded],
        )


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
