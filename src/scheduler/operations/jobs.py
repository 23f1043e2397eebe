"""Operations on jobs: create, read, list, update, pause and resume, trigger, delete, next fire times."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain import overlap, schedule
from scheduler.domain.models import Job, JobValues, Run, RunStatus, RunTrigger, project
from scheduler.domain.schedule import ScheduleError, Timing
from scheduler.domain.validation import FieldError, check_job
from scheduler.ids import uuid7
from scheduler.operations import fires, pages, timing
from scheduler.operations.errors import (
    ConflictError,
    InvalidError,
    NotFoundError,
    PreconditionFailedError,
    QuotaExceededError,
    job_not_found,
)
from scheduler.operations.runs import JobRun
from scheduler.operations.timing import TIMING_FIELDS, anchor_for

__all__ = ["SETTABLE_FIELDS", "TIMING_FIELDS", "anchor_for"]

# The fields a job's owner sets (what create takes and update may change).
SETTABLE_FIELDS = (
    "name",
    "description",
    "schedule",
    "timezone",
    "start_at",
    "end_at",
    "action",
    "timeout_s",
    "retry",
    "misfire",
    "overlap",
    "paused",
    "labels",
    "notify",
    "schedules",
    "exclusions",
)


def first_fire(timing: Timing, now: datetime) -> datetime:
    """Validate a timing's fields together and return its first fire after ``now`` (InvalidError if none)."""
    try:
        return schedule.validate(timing, now)
    except ScheduleError as exc:
        raise InvalidError.field(exc.field, str(exc)) from None
    except OverflowError:
        raise InvalidError.field("schedule", "its fire times fall outside the years 1 to 9999") from None


def fire_times(timing: Timing, after: datetime, count: int) -> list[tuple[datetime, tuple[int, ...]]]:
    """The next ``count`` fire times after ``after``, each with the indexes of its entries.

    InvalidError naming `count` when they run past the year 9999.
    """
    try:
        return schedule.fire_times_from(timing, after, count)
    except OverflowError:
        raise InvalidError.field("count", "the fire times run past the year 9999; ask for fewer") from None


def check(values: JobValues) -> None:
    """Raise InvalidError listing every field of ``values`` that is wrong."""
    if errors := check_job(values):
        raise InvalidError.of(errors)


def etag(job: Job) -> str:
    """The strong validator of a job's settable fields."""
    return f'"{job.version}"'


def if_match_allows(header: str, job: Job) -> bool:
    """Whether an If-Match header lets a write to ``job`` go ahead (see `tag_matches`)."""
    return tag_matches(header, etag(job))


def tag_matches(header: str, current: str) -> bool:
    """Whether an If-Match header names the ``current`` ETag, or `*` (RFC 9110 13.1.1).

    The comparison is strong: a weak tag (`W/"3"`) never matches, since a write must be based on
    exactly the representation the client holds.
    """
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or current in tags


def name_taken(name: str, namespace: str) -> ConflictError:
    """The refusal of a name another job of the namespace has."""
    return ConflictError(
        f"a job named {name!r} already exists in namespace {namespace!r}",
        errors=[FieldError("name", "already exists")],
    )


async def locked(conn: AsyncConn, namespace: str, job_id: UUID) -> Job:
    """The job, locked in the caller's transaction (NotFoundError outside the namespace)."""
    job = await store.job_lock(conn, namespace=namespace, job_id=job_id)
    if job is None:
        raise job_not_found(job_id)
    return job


async def get_by_name(conn: AsyncConn, *, namespace: str, name: str) -> Job:
    """The job of this name in the namespace."""
    job = await store.job_get_by_name(conn, namespace=namespace, name=name)
    if job is None:
        raise NotFoundError(f"no job named {name!r}")
    return job


async def get(conn: AsyncConn, *, namespace: str, job_id: UUID) -> Job:
    """One job of the namespace."""
    job = await store.job_get(conn, namespace=namespace, job_id=job_id)
    if job is None:
        raise job_not_found(job_id)
    return job


def new_values(*, namespace: str, spec: object, now: datetime) -> JobValues:
    """The checked values of a new job from ``spec`` (anything with the settable fields), as of ``now``.

    ``spec`` gives either ``schedule`` (with its timezone and bounds) or ``schedules``, a list of
    entries; ``exclusions`` may be absent.
    """
    values = project(
        JobValues,
        spec,
        id=uuid7(),
        namespace=namespace,
        schedule="",
        anchor_at=now,
        schedules=(),
        exclusions=None,
        next_run_at=None,
    )
    changes = {name: getattr(spec, name) for name in TIMING_FIELDS if hasattr(spec, name)}
    timing.assign(values, changes, before=None, now=now)
    check(values)
    first = first_fire(Timing.of(values), now)
    values.next_run_at = None if values.paused else first
    return values


async def count_jobs(conn: AsyncConn, *, namespace: str, delta: int, quota: int) -> None:
    """Count ``delta`` more (or fewer) jobs in the namespace; QuotaExceededError when that passes ``quota``.

    Called last in a write, so the count's row lock is held only from here to the commit; raising
    rolls back the jobs and the count alike. The count is spread over shard rows, each allowed its
    share of the quota: one create locks one shard with room, so creates in a namespace do not
    queue behind each other's commits, and a create is refused only once every shard is full,
    which is when the namespace holds its quota. A full shard is tried without being locked.
    """
    if delta == 1:
        if not await _take_one(conn, namespace, quota):
            raise _over_quota(namespace, quota)
    elif delta == -1:
        await _give_back_one(conn, namespace)
    elif delta != 0:
        await _count_many(conn, namespace, delta, quota)


def _over_quota(namespace: str, quota: int) -> QuotaExceededError:
    return QuotaExceededError(
        f"namespace {namespace!r} holds its quota of {quota} jobs; delete jobs before creating more"
    )


async def _take_one(conn: AsyncConn, namespace: str, quota: int) -> bool:
    first = secrets.randbelow(store.USAGE_SHARDS)
    if await store.namespace_usage_take_one(conn, namespace=namespace, shard=first, quota=quota):
        return True
    # The shard is full, or the namespace's shards do not exist yet (its first job).
    await store.namespace_usage_shards_ensure(conn, namespace=namespace)
    for shard in (first, *(other for other in range(store.USAGE_SHARDS) if other != first)):
        if await store.namespace_usage_take_one(conn, namespace=namespace, shard=shard, quota=quota):
            return True
    return False


async def _give_back_one(conn: AsyncConn, namespace: str) -> None:
    first = secrets.randbelow(store.USAGE_SHARDS)
    for shard in (first, *(other for other in range(store.USAGE_SHARDS) if other != first)):
        if await store.namespace_usage_give_back_one(conn, namespace=namespace, shard=shard):
            return
    # Counted before the shards existed (or by a previous release during an upgrade).
    await store.namespace_usage_add(conn, namespace=namespace, delta=-1)


async def _count_many(conn: AsyncConn, namespace: str, delta: int, quota: int) -> None:
    """A bulk change (an apply): every shard locked in order, the count spread within the shares."""
    await store.namespace_usage_shards_ensure(conn, namespace=namespace)
    shards = await store.namespace_usage_lock_shards(conn, namespace=namespace, quota=quota)
    counts = {shard.shard: shard.jobs for shard in shards}
    if delta > 0:
        if sum(max(shard.share - shard.jobs, 0) for shard in shards) < delta:
            raise _over_quota(namespace, quota)
        left = delta
        for shard in shards:
            taken = min(left, max(shard.share - shard.jobs, 0))
            counts[shard.shard] += taken
            left -= taken
    else:
        left = -delta
        for shard in shards:
            given = min(left, shard.jobs)
            counts[shard.shard] -= given
            left -= given
        if left:
            await store.namespace_usage_add(conn, namespace=namespace, delta=-left)
    await store.namespace_usage_set_shards(conn, namespace=namespace, counts=counts)


async def create(conn: AsyncConn, *, namespace: str, spec: object, now: datetime, quota: int) -> Job:
    """Create a job from ``spec``; its first fire is computed at ``now``.

    Refused when the name is taken in the namespace or the namespace holds ``quota`` jobs already.
    Needs no transaction of the caller's: the job and its count are written together either way.
    """
    values = new_values(namespace=namespace, spec=spec, now=now)
    # The common case is one statement: the job and its count in a random shard with room. Run in
    # autocommit (no Idempotency-Key) it is one round trip with no BEGIN or COMMIT, which is most
    # of what a create costs the database and the API.
    try:
        job = await store.job_create(conn, values, shard=secrets.randbelow(store.USAGE_SHARDS), quota=quota)
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name != "jobs_namespace_name_key":  # pragma: no cover - a UUIDv7 twice
            raise
        raise name_taken(values.name, namespace) from None
    if job is not None:
        return job
    # That shard is full, or the namespace has no shards yet (its first job): every shard is tried
    # in a transaction of its own (a savepoint inside the caller's).
    async with conn.transaction():
        job = await store.job_insert(conn, values)
        if job is None:
            raise name_taken(values.name, namespace)
        await count_jobs(conn, namespace=namespace, delta=1, quota=quota)
    return job


def merge(job: Job, changes: Mapping[str, Any], now: datetime) -> JobValues:
    """The job's values with ``changes`` applied; next_run_at recomputed only when timing or pause changed."""
    if unknown := changes.keys() - set(SETTABLE_FIELDS):
        raise TypeError(f"not settable: {', '.join(sorted(unknown))}")
    plain = {name: changes[name] for name in SETTABLE_FIELDS if name in changes and name not in TIMING_FIELDS}
    values = project(JobValues, job, **plain) if plain else project(JobValues, job)
    if any(name in changes for name in TIMING_FIELDS):
        timing.assign(values, changes, before=job, now=now)
    if Timing.of(values) != Timing.of(job):
        first = first_fire(Timing.of(values), now)
        values.next_run_at = None if values.paused else first
    elif values.paused != job.paused:
        values.next_run_at = None if values.paused else schedule.next_fire(Timing.of(values), now)
    return values


async def update(
    conn: AsyncConn,
    *,
    namespace: str,
    job_id: UUID,
    changes: Mapping[str, Any],
    if_match: str | None,
    now: datetime,
) -> Job:
    """Apply ``changes`` to a job; with ``if_match`` (an ETag), refuse them if the job changed since.

    A change that changes nothing writes nothing, so the version and ETag stay.
    """
    job = await locked(conn, namespace, job_id)
    if if_match is not None and not if_match_allows(if_match, job):
        raise PreconditionFailedError(f"the job changed: its ETag is now {etag(job)}, not {if_match.strip()}")
    values = merge(job, changes, now)
    if values == project(JobValues, job):
        return job
    check(values)
    try:
        updated = await store.job_update(conn, values)
    except psycopg.errors.UniqueViolation:  # renamed to a name another job has
        raise name_taken(values.name, namespace) from None
    if updated is None:  # pragma: no cover - the row is locked
        raise job_not_found(job_id)
    return updated


async def set_paused(conn: AsyncConn, *, namespace: str, job_id: UUID, paused: bool, now: datetime) -> Job:
    """Pause (next_run_at becomes null) or resume (from the next slot after ``now``) a job."""
    job = await locked(conn, namespace, job_id)
    if job.paused == paused:
        return job
    values = project(JobValues, job)
    values.paused = paused
    values.next_run_at = None if paused else schedule.next_fire(Timing.of(job), now)
    updated = await store.job_update(conn, values)
    return updated if updated is not None else job


async def trigger(conn: AsyncConn, *, namespace: str, job_id: UUID, now: datetime) -> JobRun:
    """Record a `manual` run of the job slotted at ``now``, as its overlap policy decides.

    A manual run that starts is left pending for the runners, available at once.
    """
    job = await locked(conn, namespace, job_id)
    (decision,) = await fires.decide_fires(
        conn, job_id=job_id, policy=job.overlap, active_runs=job.active_runs
    )
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
        raise ConflictError("the job was triggered at this very instant already")
    return JobRun(run, job.name)


async def remove(conn: AsyncConn, *, namespace: str, job_id: UUID) -> None:
    """Delete a job, cancelling its pending and running runs; its history stays until retention."""
    await locked(conn, namespace, job_id)
    await store.run_cancel_active_for_job(conn, job_id=job_id, reason="job deleted")
    await store.job_delete(conn, namespace=namespace, job_id=job_id)
    await count_jobs(conn, namespace=namespace, delta=-1, quota=0)


async def next_runs(
    conn: AsyncConn, *, namespace: str, job_id: UUID, count: int, now: datetime
) -> list[tuple[datetime, tuple[int, ...]]]:
    """The job's next ``count`` fire times after ``now`` (or from start_at), ignoring pause.

    Each comes with the indexes of the schedule entries due at it.
    """
    job = await get(conn, namespace=namespace, job_id=job_id)
    return fire_times(Timing.of(job), now, count)


async def list_page(
    conn: AsyncConn,
    *,
    namespace: str,
    cursor: str | None,
    limit: int,
    name_prefix: str | None = None,
    paused: bool | None = None,
    labels: Mapping[str, str] | None = None,
    failing: bool = False,
) -> tuple[list[Job], str | None]:
    """A page of the namespace's jobs in name order, and the cursor of the next (None on the last).

    ``failing`` keeps the jobs whose newest finished run did not succeed.
    """
    jobs = await store.job_list(
        conn,
        namespace=namespace,
        after_name=pages.after_name(cursor),
        limit=limit,
        name_prefix=name_prefix,
        paused=paused,
        labels=dict(labels or {}),
        failing=failing,
    )
    return jobs, pages.name_cursor(jobs[-1].name) if len(jobs) == limit else None


async def runs_page(
    conn: AsyncConn,
    *,
    namespace: str,
    job_id: UUID,
    cursor: str | None,
    limit: int,
    now: datetime,
    statuses: Sequence[RunStatus] | None = None,
) -> tuple[list[Run], str | None]:
    """A page of one job's runs, newest slot first (then newest attempt), and the next page's cursor."""
    before = pages.before_slot(cursor)
    await get(conn, namespace=namespace, job_id=job_id)
    runs = await store.run_list_for_job(
        conn, job_id=job_id, before=before, limit=limit, now=now, statuses=statuses
    )
    if len(runs) < limit:
        return runs, None
    return runs, pages.slot_cursor(runs[-1].scheduled_for, runs[-1].attempt)
