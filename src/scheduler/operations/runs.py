"""Operations on runs: read, list, cancel, and retry as a new attempt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain.models import Job, OverlapPolicy, Run, RunStatus, RunTrigger
from scheduler.domain.retry import RETRYABLE_BY_REQUEST
from scheduler.operations import fires, pages
from scheduler.operations.errors import ConflictError, MalformedError, run_not_found


class JobRun(NamedTuple):
    """A run an operation made or changed, with the name of its job (locked, so at hand)."""

    run: Run
    job_name: str


async def get(conn: AsyncConn, *, namespace: str, run_id: UUID) -> Run:
    """One run of the namespace's jobs."""
    run = await store.run_get(conn, namespace=namespace, run_id=run_id)
    if run is None:
        raise run_not_found(run_id)
    return run


async def _with_locked_job(conn: AsyncConn, *, namespace: str, run_id: UUID) -> tuple[Run, Job]:
    """The run and its job, the job's row locked (a run changes its job's counters)."""
    run = await get(conn, namespace=namespace, run_id=run_id)
    job = await store.job_lock(conn, namespace=namespace, job_id=run.job_id)
    if job is None:
        raise run_not_found(run_id)
    return run, job


async def cancel(conn: AsyncConn, *, namespace: str, run_id: UUID) -> JobRun:
    """Cancel a pending or running run (ConflictError once finished); its runner is told at commit."""
    run, job = await _with_locked_job(conn, namespace=namespace, run_id=run_id)
    cancelled = await store.run_cancel(
        conn, run_id=run.id, scheduled_for=run.scheduled_for, reason="cancelled by request"
    )
    if cancelled is None:
        current = await store.run_get(conn, namespace=namespace, run_id=run_id)
        status = current.status if current else run.status
        raise ConflictError(f"run {run_id} already finished ({status})")
    if job.overlap is OverlapPolicy.QUEUE and run.status is RunStatus.RUNNING:
        await fires.runs_ended(conn, queue_job_ids=[job.id])
    return JobRun(cancelled, job.name)


async def retry(conn: AsyncConn, *, namespace: str, run_id: UUID) -> JobRun:
    """Record the next attempt of a slot whose newest attempt failed, timed out, was cancelled or lost."""
    # The job's lock orders this attempt against a runner recording one, and its count of
    # unfinished runs that the insert raises.
    run, job = await _with_locked_job(conn, namespace=namespace, run_id=run_id)
    if run.status not in RETRYABLE_BY_REQUEST:
        raise ConflictError(
            f"run {run_id} is {run.status}; only failed, timed_out, cancelled or lost runs can be retried"
        )
    latest = await store.run_latest_attempt(conn, job_id=run.job_id, scheduled_for=run.scheduled_for)
    if latest != run.attempt:
        raise ConflictError(f"attempt {latest} of this slot exists already; retry that one")
    created = await store.run_insert_one(
        conn,
        fires.next_attempt(
            job_id=run.job_id, scheduled_for=run.scheduled_for, attempt=latest + 1, available_in_s=0.0
        ),
    )
    if created is None:
        raise ConflictError(f"attempt {latest + 1} of this slot exists already")
    return JobRun(created, job.name)


def statuses_of(text: str | None) -> list[RunStatus] | None:
    """The statuses of a `status` filter: one, or a comma-separated list (`failed,timed_out`)."""
    if text is None:
        return None
    statuses: list[RunStatus] = []
    for part in text.split(","):
        try:
            statuses.append(RunStatus(part.strip()))
        except ValueError:
            known = ", ".join(status.value for status in RunStatus)
            raise MalformedError.field(
                "status", f"{part.strip()!r} is not a run status (one of {known})"
            ) from None
    return statuses


async def job_names(conn: AsyncConn, *, namespace: str, runs: Sequence[Run]) -> dict[UUID, str]:
    """The names of the jobs these runs belong to (a run whose job was deleted has none)."""
    return await store.job_names(conn, namespace=namespace, job_ids=sorted({run.job_id for run in runs}))


async def list_page(
    conn: AsyncConn,
    *,
    namespace: str,
    cursor: str | None,
    limit: int,
    now: datetime,
    job_id: UUID | None = None,
    job_name: str | None = None,
    statuses: Sequence[RunStatus] | None = None,
    trigger: RunTrigger | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    labels: dict[str, str] | None = None,
) -> tuple[list[Run], str | None]:
    """A page of the namespace's runs across its jobs, newest first, and the next page's cursor.

    ``since`` (inclusive) and ``until`` (exclusive) bound the slot; they must carry an offset.
    ``job_name`` keeps the runs of the job of that name (none when no job has it, or when
    ``job_id`` names another); ``labels`` those of jobs whose labels hold them.
    """
    for field, instant in (("since", since), ("until", until)):
        if instant is not None and instant.utcoffset() is None:
            raise MalformedError.field(
                field, "give an RFC 3339 time with an offset, e.g. 2026-11-23T08:00:00Z"
            )
    before_id = pages.before_id(cursor)
    if job_name is not None:
        named = await store.job_get_by_name(conn, namespace=namespace, name=job_name)
        if named is None or (job_id is not None and named.id != job_id):
            return [], None
        job_id = named.id
    runs = await store.run_list_namespace(
        conn,
        namespace=namespace,
        now=now,
        limit=limit,
        before_id=before_id,
        job_id=job_id,
        statuses=statuses,
        trigger=trigger,
        since=since,
        until=until,
        labels=labels,
    )
    return runs, pages.id_cursor(runs[-1].id) if len(runs) == limit else None
