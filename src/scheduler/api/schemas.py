"""Wire shapes of the HTTP API (create, update, read) and the checks msgspec cannot express."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID

import msgspec

from scheduler.api.problems import FieldError
from scheduler.domain.models import (
    Action,
    HttpAction,
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

NAME_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
MAX_ACTION_BODY = 256 * 1024
MAX_LABELS = 64
_LABEL_KEY = re.compile(r"^[A-Za-z0-9._/-]{1,63}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
# RFC 9110 field-value limited to what the runner can send: visible ASCII, with spaces and tabs
# only between visible characters (no other control characters, no bytes above 0x7E).
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20\x09\x21-\x7e]*[\x21-\x7e])?)?")
HEADER_VALUE_MESSAGE = "value must be visible ASCII (0x21-0x7E), with spaces or tabs only between characters"
# Headers the runner sets itself, or that would let a job smuggle a second request.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
_SUCCESS_CODES = re.compile(r"^\s*([1-5](?:xx|\d\d))\s*(?:,\s*([1-5](?:xx|\d\d))\s*)*$")

Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, description="Unique in the namespace.")]
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
    def of(cls, run: Run) -> RunOut:
        """Project a stored run onto its wire shape."""
        return project(cls, run)


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


# ------------------------------------------------------------------------------------- checks


def _check_url(url: str) -> list[FieldError]:
    errors: list[FieldError] = []
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced IPv6 bracket, for one
        return [FieldError("action.url", f"is not a URL ({exc})")]
    if parts.scheme not in ("http", "https"):
        errors.append(FieldError("action.url", "must be an http:// or https:// URL"))
    elif not parts.hostname:
        errors.append(FieldError("action.url", "has no host"))
    elif parts.username or parts.password:
        errors.append(FieldError("action.url", "must not carry credentials; use action.headers"))
    else:
        try:
            _ = parts.port
        except ValueError:
            errors.append(FieldError("action.url", "has an invalid port"))
    if any(ch in url for ch in " \r\n\t"):
        errors.append(FieldError("action.url", "must not contain whitespace"))
    return errors


# Deepest nesting a payload or body may have: runners decode and log these with recursive code at
# a deeper stack than the API's, so a value the API could just decode must not reach them.
MAX_NESTING = 64


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` levels (walked without recursion)."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def check_action(action: Action) -> list[FieldError]:
    """Return what is wrong with an action beyond its types."""
    if not isinstance(action, HttpAction):
        if _nests_deeper(action.payload, MAX_NESTING):
            return [FieldError("action.payload", f"nests deeper than {MAX_NESTING} levels")]
        return []
    errors = _check_url(action.url)
    if _nests_deeper(action.body, MAX_NESTING):
        errors.append(FieldError("action.body", f"nests deeper than {MAX_NESTING} levels"))
    for name, value in action.headers.items():
        if not _HEADER_NAME.fullmatch(name):
            errors.append(FieldError(f"action.headers.{name}", "is not a valid header name"))
        elif name.lower() in _RESERVED_HEADERS or name.lower().startswith("webhook-"):
            errors.append(
                FieldError(f"action.headers.{name}", "is set by the scheduler and cannot be overridden")
            )
        if len(value) > 8192:  # noqa: PLR2004
            errors.append(FieldError(f"action.headers.{name}", "value must be at most 8192 characters"))
        elif not _HEADER_VALUE.fullmatch(value):  # fullmatch: `$` would let a final newline by
            errors.append(FieldError(f"action.headers.{name}", HEADER_VALUE_MESSAGE))
    if action.body is not None:
        encoded = action.body.encode() if isinstance(action.body, str) else msgspec.json.encode(action.body)
        if len(encoded) > MAX_ACTION_BODY:
            errors.append(FieldError("action.body", f"is {len(encoded)} bytes; the limit is 256 KiB"))
    if not _SUCCESS_CODES.match(action.success_codes):
        errors.append(
            FieldError("action.success_codes", "must list codes or classes, like 2xx or 200,202,3xx")
        )
    if action.method in ("GET", "HEAD") and action.body is not None:
        errors.append(FieldError("action.body", f"a {action.method} request carries no body"))
    return errors


# Instants a job or a preview may name: beyond them, the date arithmetic of fire times and the
# database's round trip of timestamps (year 1 with an offset is year 0 in UTC) break down.
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)


def check_instant(field: str, value: datetime | None) -> list[FieldError]:
    """Return the error of an instant outside the years the scheduler works with."""
    if value is None or EARLIEST_INSTANT <= value < LATEST_INSTANT:
        return []
    return [FieldError(field, "must lie between 1970-01-01 and 9000-01-01")]


def check_policies(retry: RetryPolicy, labels: dict[str, str]) -> list[FieldError]:
    """Return what is wrong with the retry policy and labels beyond their types."""
    errors: list[FieldError] = []
    if retry.min_backoff_s > retry.max_backoff_s:
        errors.append(FieldError("retry.min_backoff_s", "must not exceed retry.max_backoff_s"))
    if len(labels) > MAX_LABELS:
        errors.append(FieldError("labels", f"at most {MAX_LABELS} labels"))
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):  # fullmatch: `$` would let a final newline by
            errors.append(FieldError(f"labels.{key}", "keys are 1-63 of A-Z a-z 0-9 . _ / -"))
        if len(value) > 256:  # noqa: PLR2004
            errors.append(FieldError(f"labels.{key}", "values are at most 256 characters"))
    return errors
