"""The /jobs resource: create, read, list, update, delete, pause, resume, next runs, history."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
import psycopg
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from scheduler.api.problems import (
    NUL_MESSAGE,
    FieldError,
    ProblemError,
    invalid,
    problem_responses,
)
from scheduler.api.schemas import (
    NAME_PATTERN,
    JobCreate,
    JobOut,
    JobPage,
    JobPatch,
    NextRuns,
    RunOut,
    RunPage,
    check_action,
    check_instant,
    check_policies,
)
from scheduler.api.state import conn_for, namespace_of, settings_of
from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain import overlap, schedule
from scheduler.domain.models import Job, JobValues, Run, RunStatus, RunTrigger, project
from scheduler.domain.schedule import ScheduleError, Timing
from scheduler.ids import uuid7

_NAME = re.compile(NAME_PATTERN)


def timing_of(values: JobValues) -> Timing:
    """The part of a job that decides when it fires."""
    return Timing(values.schedule, values.timezone, values.anchor_at, values.start_at, values.end_at)


def anchor_for(start_at: datetime | None, now: datetime) -> datetime:
    """Where `@every` counts from: start_at, else now truncated to the second."""
    return start_at if start_at is not None else now.replace(microsecond=0)


def first_fire(values: JobValues, now: datetime) -> datetime:
    """Validate the timing fields together and return the first fire after ``now``."""
    if values.start_at and values.end_at and values.end_at <= values.start_at:
        raise invalid("end_at", "must be after start_at")
    try:
        return schedule.validate(timing_of(values), now)
    except ScheduleError as exc:
        raise invalid(exc.field, str(exc)) from None
    except OverflowError:
        raise invalid("schedule", "its fire times fall outside the years 1 to 9999") from None


def check_values(values: JobValues) -> None:
    """Raise a 422 problem listing every field that is wrong."""
    errors: list[FieldError] = (
        check_instant("start_at", values.start_at)
        + check_instant("end_at", values.end_at)
        + check_action(values.action)
        + check_policies(values.retry, values.labels)
    )
    if not _NAME.fullmatch(values.name):  # the schema's pattern lets a final newline by (`$`)
        errors.append(FieldError("name", "must be 1-128 of A-Z a-z 0-9 . _ -"))
    if errors:
        raise ProblemError(
            422, "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors, kind="invalid-request"
        )


def etag(job: Job) -> str:
    """The strong validator of a job's settable fields."""
    return f'"{job.version}"'


def if_match_allows(header: str, job: Job) -> bool:
    """Whether an If-Match header lets a write go ahead (RFC 9110 13.1.1).

    The comparison is strong: a weak tag (`W/"3"`) never matches, since a write must be based on
    exactly the representation the client holds.
    """
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag(job) in tags


def job_response(job: Job, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[JobOut]:
    """Render a job with its ETag."""
    return Response(JobOut.of(job), status_code=status_code, headers={"ETag": etag(job)} | (headers or {}))


def encode_cursor(value: str) -> str:
    """Make a cursor opaque (and URL-safe)."""
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """Undo encode_cursor, answering 400 naming `cursor` when it was not ours."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("cursor", "is not a cursor this API returned", status=400) from None


def _parse_label(label: str | None) -> dict[str, str]:
    if label is None:
        return {}
    key, sep, value = label.partition(":")
    if not sep or not key:
        raise invalid("label", "filter labels as key:value", status=400)
    return {key: value}


def _name_taken(name: str, namespace: str) -> ProblemError:
    return ProblemError(
        409,
        f"a job named {name!r} already exists in namespace {namespace!r}",
        errors=[FieldError("name", "already exists")],
        kind="conflict",
    )


def _job_not_found(job_id: UUID) -> ProblemError:
    return ProblemError(404, f"job {job_id} not found", kind="not-found")


class JobController(Controller):
    """Jobs of the caller's namespace."""

    path = "/jobs"
    tags = ["jobs"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post("/", status_code=HTTP_201_CREATED, responses=problem_responses(400, 401, 409, 413, 422, 429))
    async def create_job(
        self, request: Request[Any, Any, Any], data: JSONBody[JobCreate]
    ) -> Response[JobOut]:
        """Create a job; its first fire time is computed now and stored as next_run_at."""
        namespace = namespace_of(request)
        now = datetime.now(UTC)
        values = project(
            JobValues,
            data,
            id=uuid7(),
            namespace=namespace,
            anchor_at=anchor_for(data.start_at, now),
            next_run_at=None,
        )
        check_values(values)
        first = first_fire(values, now)
        values.next_run_at = None if data.paused else first
        quota = settings_of(request).namespace_job_quota
        async with conn_for(request) as conn, conn.transaction():
            job = await store.job_insert(conn, values)
            if job is None:
                raise _name_taken(data.name, namespace)
            # Counted last: the count's row lock orders racing creates in a namespace, so together
            # they cannot pass the quota, and it is held only from here to the commit. Raising
            # rolls back the job and the count alike.
            if await store.namespace_usage_add(conn, namespace=namespace, delta=1) > quota:
                raise ProblemError(
                    422,
                    f"namespace {namespace!r} holds its quota of {quota} jobs; "
                    "delete jobs before creating more",
                    kind="quota-exceeded",
                )
        return job_response(job, HTTP_201_CREATED, {"Location": f"/jobs/{job.id}"})

    @get("/", responses=problem_responses(400, 401, 422, 429))
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        *,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: FromQuery[str | None] = None,
        name_prefix: Annotated[str | None, QueryParameter(max_length=128)] = None,
        paused: FromQuery[bool | None] = None,
        label: FromQuery[str | None] = None,
    ) -> JobPage:
        """List jobs in name order; follow next_cursor for the next page."""
        for field, text in (("name_prefix", name_prefix), ("label", label)):
            if text is not None and "\x00" in text:
                raise invalid(field, NUL_MESSAGE, status=400)
        after_name: str | None = None
        if cursor is not None:
            after_name = decode_cursor(cursor)
            if not _NAME.match(after_name):
                raise invalid("cursor", "is not a cursor this API returned", status=400)
        async with conn_for(request) as conn:
            jobs = await store.job_list(
                conn,
                namespace=namespace_of(request),
                after_name=after_name,
                limit=limit,
                name_prefix=name_prefix,
                paused=paused,
                labels=_parse_label(label),
            )
        next_cursor = encode_cursor(jobs[-1].name) if len(jobs) == limit else None
        return JobPage(items=[JobOut.of(job) for job in jobs], next_cursor=next_cursor)

    @get("/{job_id:uuid}", responses=problem_responses(401, 404, 429))
    async def get_job(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Response[JobOut]:
        """Return one job."""
        async with conn_for(request) as conn:
            job = await store.job_get(conn, namespace=namespace_of(request), job_id=job_id)
        if job is None:
            raise _job_not_found(job_id)
        return job_response(job)

    @patch("/{job_id:uuid}", responses=problem_responses(400, 401, 404, 409, 412, 413, 422, 429))
    async def update_job(
        self, request: Request[Any, Any, Any], job_id: FromPath[UUID], data: JSONBody[JobPatch]
    ) -> Response[JobOut]:
        """Change some fields; with `If-Match` set to the ETag, refuse the change if someone wrote first."""
        async with conn_for(request) as conn, conn.transaction():
            job = await update(
                conn,
                namespace=namespace_of(request),
                job_id=job_id,
                patch=data,
                if_match=request.headers.get("if-match"),
                now=datetime.now(UTC),
            )
        return job_response(job)

    @delete("/{job_id:uuid}", status_code=HTTP_204_NO_CONTENT, responses=problem_responses(401, 404, 429))
    async def delete_job(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> None:
        """Delete a job; its pending and running runs are cancelled, its history stays until retention."""
        async with conn_for(request) as conn, conn.transaction():
            await remove(conn, namespace=namespace_of(request), job_id=job_id)

    @post("/{job_id:uuid}/pause", status_code=200, responses=problem_responses(401, 404, 429))
    async def pause_job(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Response[JobOut]:
        """Stop firing; next_run_at becomes null. Runs already started go on."""
        return await self._set_paused(request, job_id, paused=True)

    @post("/{job_id:uuid}/resume", status_code=200, responses=problem_responses(401, 404, 429))
    async def resume_job(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Response[JobOut]:
        """Fire again from the next slot after now; slots passed while paused are not caught up."""
        return await self._set_paused(request, job_id, paused=False)

    async def _set_paused(
        self, request: Request[Any, Any, Any], job_id: FromPath[UUID], *, paused: bool
    ) -> Response[JobOut]:
        async with conn_for(request) as conn, conn.transaction():
            job = await set_paused(
                conn, namespace=namespace_of(request), job_id=job_id, paused=paused, now=datetime.now(UTC)
            )
        return job_response(job)

    @post(
        "/{job_id:uuid}/trigger",
        status_code=HTTP_202_ACCEPTED,
        responses=problem_responses(401, 404, 409, 429),
    )
    async def trigger_job(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> RunOut:
        """Fire the job now as a `manual` run, obeying its overlap policy (a skipped fire is recorded)."""
        async with conn_for(request) as conn, conn.transaction():
            run = await trigger(conn, namespace=namespace_of(request), job_id=job_id, now=datetime.now(UTC))
        return RunOut.of(run)

    @get("/{job_id:uuid}/next-runs", responses=problem_responses(400, 401, 404, 422, 429))
    async def next_runs(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[UUID],
        count: Annotated[int, QueryParameter(ge=1, le=100)] = 10,
    ) -> NextRuns:
        """Upcoming fire times from now (or from start_at), ignoring pause."""
        async with conn_for(request) as conn:
            job = await store.job_get(conn, namespace=namespace_of(request), job_id=job_id)
        if job is None:
            raise _job_not_found(job_id)
        try:
            return NextRuns(next=schedule.fire_times(timing_of(job), datetime.now(UTC), count))
        except OverflowError:
            raise invalid("count", "the fire times run past the year 9999; ask for fewer") from None

    @get("/{job_id:uuid}/runs", responses=problem_responses(400, 401, 404, 422, 429))
    async def list_runs(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[UUID],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: FromQuery[str | None] = None,
        status: FromQuery[RunStatus | None] = None,
    ) -> RunPage:
        """Run history, newest slot first (then newest attempt)."""
        before: tuple[datetime, int] | None = None
        if cursor is not None:
            slot, _, attempt = decode_cursor(cursor).partition("|")
            try:
                before = (datetime.fromisoformat(slot), int(attempt))
            except ValueError:
                raise invalid("cursor", "is not a cursor this API returned", status=400) from None
        async with conn_for(request) as conn:
            job = await store.job_get(conn, namespace=namespace_of(request), job_id=job_id)
            if job is None:
                raise _job_not_found(job_id)
            runs = await store.run_list_for_job(
                conn, job_id=job_id, before=before, limit=limit, now=datetime.now(UTC), status=status
            )
        next_cursor = None
        if len(runs) == limit:
            last = runs[-1]
            next_cursor = encode_cursor(f"{last.scheduled_for.isoformat()}|{last.attempt}")
        return RunPage(items=[RunOut.of(run) for run in runs], next_cursor=next_cursor)


def _values_of(job: Job) -> JobValues:
    return project(JobValues, job)


_TIMING_FIELDS = ("schedule", "timezone", "start_at", "end_at")


def _merge(job: Job, patch: JobPatch, now: datetime) -> JobValues:
    """Apply a patch; recompute next_run_at when a field that decides timing changed."""
    changed = {
        name: value
        for name in JobPatch.__struct_fields__
        if (value := getattr(patch, name)) is not msgspec.UNSET
    }
    values = project(JobValues, job, **changed)
    timing_changed = any(getattr(values, name) != getattr(job, name) for name in _TIMING_FIELDS)
    if timing_changed:
        if values.start_at != job.start_at or values.schedule != job.schedule:
            values.anchor_at = anchor_for(values.start_at, now)
        first = first_fire(values, now)
        values.next_run_at = None if values.paused else first
    elif values.paused != job.paused:
        values.next_run_at = None if values.paused else schedule.next_fire(timing_of(values), now)
    return values


# ------------------------------------------------------------ domain rules shared with the console
# The API's handlers and the web console (scheduler.ui) change jobs through these, so both follow
# the same rules. Each runs in the caller's transaction and raises the API's problems.


async def set_paused(conn: AsyncConn, *, namespace: str, job_id: UUID, paused: bool, now: datetime) -> Job:
    """Pause (next_run_at becomes null) or resume (from the next slot after ``now``) a job."""
    job = await store.job_lock(conn, namespace=namespace, job_id=job_id)
    if job is None:
        raise _job_not_found(job_id)
    if job.paused != paused:
        values = _values_of(job)
        values.paused = paused
        values.next_run_at = None if paused else schedule.next_fire(timing_of(job), now)
        updated = await store.job_update(conn, values)
        job = updated if updated is not None else job
    return job


async def trigger(conn: AsyncConn, *, namespace: str, job_id: UUID, now: datetime) -> Run:
    """Record a `manual` run of the job slotted at ``now``, as its overlap policy decides."""
    job = await store.job_lock(conn, namespace=namespace, job_id=job_id)
    if job is None:
        raise _job_not_found(job_id)
    has_queued = await store.run_has_queued(
        conn, job_id=job_id, overlap=job.overlap, active_runs=job.active_runs
    )
    (decision,) = overlap.decide(job.overlap, active_runs=job.active_runs, has_queued=has_queued)
    if decision is overlap.Decision.REPLACE:
        await store.run_cancel_active_for_job(conn, job_id=job_id, reason=overlap.REPLACE_REASON)
    # A manual run that starts is left pending for the runners, available at once.
    row = overlap.recorded_as(decision, job.overlap, started=RunStatus.PENDING)
    run = await store.run_insert_one(
        conn,
        store.NewRun(
            id=uuid7(now),
            job_id=job_id,
            scheduled_for=now,
            trigger=RunTrigger.MANUAL,
            attempt=1,
            status=row.status,
            available_in_s=0.0 if row.status is RunStatus.PENDING and not row.waits else None,
            error=row.error,
        ),
    )
    if run is None:
        raise ProblemError(409, "the job was triggered at this very instant already", kind="conflict")
    return run


async def remove(conn: AsyncConn, *, namespace: str, job_id: UUID) -> None:
    """Delete a job, cancelling its pending and running runs."""
    job = await store.job_lock(conn, namespace=namespace, job_id=job_id)
    if job is None:
        raise _job_not_found(job_id)
    await store.run_cancel_active_for_job(conn, job_id=job_id, reason="job deleted")
    await store.job_delete(conn, namespace=namespace, job_id=job_id)
    await store.namespace_usage_add(conn, namespace=namespace, delta=-1)


async def update(
    conn: AsyncConn, *, namespace: str, job_id: UUID, patch: JobPatch, if_match: str | None, now: datetime
) -> Job:
    """Apply a patch to a job; with ``if_match`` (an ETag), refuse it (412) if the job changed since."""
    job = await store.job_lock(conn, namespace=namespace, job_id=job_id)
    if job is None:
        raise _job_not_found(job_id)
    if if_match is not None and not if_match_allows(if_match, job):
        raise ProblemError(
            412,
            f"the job changed: its ETag is now {etag(job)}, not {if_match.strip()}",
            kind="precondition-failed",
        )
    values = _merge(job, patch, now)
    if values == _values_of(job):  # nothing changes: no write, so version and ETag stay
        return job
    check_values(values)
    try:
        updated = await store.job_update(conn, values)
    except psycopg.errors.UniqueViolation:  # renamed to a name another job has
        raise _name_taken(values.name, namespace) from None
    if updated is None:  # pragma: no cover - the row is locked
        raise _job_not_found(job_id)
    return updated
