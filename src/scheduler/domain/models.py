"""Domain types shared by the store, the API and the runner; enums mirror the SQL enums."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

import msgspec

from scheduler.domain.exclusions import Exclusions
from scheduler.domain.schedule import Entry

STORED_AS_JSON = msgspec.Meta(extra={"column": "json"})
"""Marks a field holding one Struct that the store keeps as one JSON column, not a column per field."""

# ------------------------------------------------------------------------------------------ enums


class RunStatus(StrEnum):
    """SQL enum run_status: where a run is in its life (drawn in the README)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    LOST = "lost"


class RunTrigger(StrEnum):
    """SQL enum run_trigger: why a run exists."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"
    CATCHUP = "catchup"


class MisfirePolicy(StrEnum):
    """SQL enum misfire_policy: what to do with slots no runner claimed in time."""

    SKIP = "skip"
    ONCE = "once"
    ALL = "all"


class OverlapPolicy(StrEnum):
    """SQL enum overlap_policy: what a fire does while the job's previous run still runs."""

    SKIP = "skip"
    ALLOW = "allow"
    QUEUE = "queue"
    REPLACE = "replace"


# Enum members by their SQL value: a dict lookup costs a fraction of calling the enum, and the
# runner converts a few per fire.
RUN_STATUS = {member.value: member for member in RunStatus}
RUN_TRIGGER = {member.value: member for member in RunTrigger}
MISFIRE_POLICY = {member.value: member for member in MisfirePolicy}
OVERLAP_POLICY = {member.value: member for member in OverlapPolicy}

# ------------------------------------------------------------------------- actions and policies

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class HttpAction(msgspec.Struct, tag="http", tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """Call a URL; the run succeeds when the status is in success_codes."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    method: HttpMethod = "POST"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body: Any = None
    """Sent as JSON, or as-is when a string; omitted when null."""
    success_codes: str = "2xx"
    """Comma-separated status codes or classes, e.g. `2xx` or `200,202,3xx`."""
    follow_redirects: bool = False
    """Redirects are not followed unless a job opts in; each hop is checked like the first."""


class LogAction(msgspec.Struct, tag="log", tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """Write the payload as one structured log event; the run succeeds."""

    payload: dict[str, Any] = msgspec.field(default_factory=dict)


Action = HttpAction | LogAction


class RetryPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Attempts per slot and the bounds of the exponential backoff (full jitter) between them."""

    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    min_backoff_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 1.0
    max_backoff_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 300.0


class Misfire(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How slots that no runner claimed within grace_s are treated."""

    policy: MisfirePolicy = MisfirePolicy.ONCE
    grace_s: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 5
    window_s: Annotated[int, msgspec.Meta(ge=1, le=604_800)] = 3600


class Notify(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Who hears of a job that keeps failing, and when; and whether the job pauses itself."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | None = None
    """Where `job.failing` and `job.recovered` events are POSTed, signed as the job's calls are."""
    after: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    """Failed slots in a row (each slot's final attempt; retries are not counted apart) before the
    one `job.failing` event."""
    on_recovery: bool = True
    """POST `job.recovered` when a job reported failing next succeeds."""
    pause_after: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    """Pause the job, with a note saying why, once this many slots in a row have failed."""


# ------------------------------------------------------------------------------------------ rows


class LastRun(msgspec.Struct, kw_only=True):
    """The newest finished run of a job, kept on the job row."""

    id: UUID
    status: RunStatus
    scheduled_for: datetime
    finished_at: datetime | None


class JobValues(msgspec.Struct, kw_only=True):
    """Every column a create or update writes: the job as its owner set it, and its next slot."""

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
    anchor_at: datetime
    """Where `@every` counts from: start_at when given, else the creation (or rescheduling) time."""
    schedules: tuple[Entry, ...] = ()
    """Every schedule entry of a job with several (the fields above then repeat the first); else empty."""
    exclusions: Annotated[Exclusions | None, STORED_AS_JSON] = None
    """The dates and calendars on which the job does not fire."""
    notify: Annotated[Notify | None, STORED_AS_JSON] = None
    """Failure and recovery notifications, and pausing after failures; None for neither."""


class Job(JobValues, kw_only=True):
    """A job as stored: its values, and what the database keeps itself."""

    last_run: LastRun | None
    created_at: datetime
    updated_at: datetime
    version: int
    active_runs: int
    """Runs pending or running: the overlap policy decides on it."""
    pause_note: str | None
    """The console's note on why the job is paused."""
    consecutive_failures: int
    """How many of the newest finished runs in a row did not succeed (0 after a success)."""
    failed_slots: int = 0
    """How many of the newest slots in a row failed on their final attempt (0 after a success)."""


class SentRequest(msgspec.Struct, kw_only=True, frozen=True):
    """The HTTP request an attempt sent, as a run records it: secrets masked, headers and body capped."""

    method: str
    url: str
    """The URL called: the last hop when redirects were followed; secret-looking query values masked."""
    headers: dict[str, str]
    body: str | None = None
    """The first 4 KiB of the body as text (invalid UTF-8 as U+FFFD); None when there was none."""
    body_truncated: bool = False


class Outcome(msgspec.Struct, kw_only=True, frozen=True):
    """How one attempt ended: what its action returned, or what a rescue found."""

    status: RunStatus
    duration_ms: int | None
    """None when nobody saw the attempt end (its runner died, and the rescuer recorded it lost)."""
    http_status: int | None = None
    output: str | None = None
    error: str | None = None
    retryable: bool = True
    """False for failures no retry can mend (a refused address, an invalid URL): final at once."""
    request: SentRequest | None = None
    """What an HTTP attempt sent (None for log actions and rescued runs), masked before it is stored."""
    response_headers: dict[str, str] | None = None
    """The response's headers, masked and capped, when one came back."""


class Run(msgspec.Struct, kw_only=True):
    """A run as stored: one attempt at one slot of one job."""

    id: UUID
    job_id: UUID
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
    available_at: datetime | None
    created_at: datetime


# ------------------------------------------------------------------------------------ projections

S = TypeVar("S", bound=msgspec.Struct)


def project(shape: type[S], source: object, **given: Any) -> S:
    """Make a ``shape`` from ``given`` values, its other fields read off ``source`` by name.

    How a Job becomes its JobValues or its wire shape, and a request body plus what the service
    decides becomes JobValues, without spelling the fields out again.
    """
    if not given:
        # msgspec reads the attributes in C (as fast as the fields spelled out), checking them
        # against the shape's types; Structs and enums among them are kept, not copied.
        return msgspec.convert(source, shape, from_attributes=True)
    fields = shape.__struct_fields__
    if unknown := given.keys() - set(fields):
        raise TypeError(f"{shape.__name__} has no field {', '.join(sorted(unknown))}")
    return shape(**{name: given[name] if name in given else getattr(source, name) for name in fields})
