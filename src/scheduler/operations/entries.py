"""The Schedules API's operations: list, add, read, replace and delete one job's schedule entries.

Each locks the job, changes its list of entries, recomputes its next slot from the union, and
writes the job (its version moves on, as for any change). A job keeps at least one entry.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain.fields import EntrySpec
from scheduler.domain.models import Job, JobValues, project
from scheduler.domain.schedule import MAX_ENTRIES, Entry, Timing
from scheduler.ids import uuid7
from scheduler.operations import jobs, timing
from scheduler.operations.errors import ConflictError, NotFoundError, PreconditionFailedError, job_not_found


def _find(job: Job, entry_id: UUID) -> tuple[int, Entry]:
    for index, entry in enumerate(timing.entries_of(job)):
        if entry.id == entry_id:
            return index, entry
    raise NotFoundError(f"job {job.id} has no schedule entry {entry_id}")


def _check_if_match(if_match: str | None, entry: Entry) -> None:
    if if_match is None:
        return
    if not jobs.tag_matches(if_match, timing.entry_etag(entry)):
        raise PreconditionFailedError(
            f"the schedule entry changed: its ETag is now {timing.entry_etag(entry)}, not {if_match.strip()}"
        )


async def _rewrite(conn: AsyncConn, job: Job, entries: list[Entry], now: datetime) -> Job:
    values = project(JobValues, job)
    timing.set_entries(values, entries)
    first = jobs.first_fire(Timing.of(values), now)
    values.next_run_at = None if values.paused else first
    jobs.check(values)
    updated = await store.job_update(conn, values)
    if updated is None:  # pragma: no cover - the row is locked
        raise job_not_found(job.id)
    return updated


async def list_entries(conn: AsyncConn, *, namespace: str, job_id: UUID) -> tuple[Entry, ...]:
    """Every entry of the job, in its order."""
    return timing.entries_of(await jobs.get(conn, namespace=namespace, job_id=job_id))


async def get_entry(conn: AsyncConn, *, namespace: str, job_id: UUID, entry_id: UUID) -> Entry:
    """One entry of the job."""
    return _find(await jobs.get(conn, namespace=namespace, job_id=job_id), entry_id)[1]


async def add_entry(
    conn: AsyncConn, *, namespace: str, job_id: UUID, spec: EntrySpec, now: datetime
) -> tuple[Job, Entry]:
    """Add an entry at the end of the job's list (its zone defaults to the job's first entry's)."""
    job = await jobs.locked(conn, namespace, job_id)
    entries = list(timing.entries_of(job))
    if len(entries) >= MAX_ENTRIES:
        raise ConflictError(f"the job holds {MAX_ENTRIES} schedule entries already, the most it may")
    if spec.id is not None and any(entry.id == spec.id for entry in entries):
        raise ConflictError(f"the job has a schedule entry {spec.id} already")
    entry = timing.entry_of(
        spec, default_zone=job.timezone, kept=None, entry_id=spec.id or uuid7(now), now=now
    )
    return await _rewrite(conn, job, [*entries, entry], now), entry


async def replace_entry(
    conn: AsyncConn,
    *,
    namespace: str,
    job_id: UUID,
    entry_id: UUID,
    spec: EntrySpec,
    if_match: str | None,
    now: datetime,
) -> tuple[Job, Entry]:
    """Replace one entry, keeping its id and place (and its `@every` anchor if the expression stays)."""
    job = await jobs.locked(conn, namespace, job_id)
    index, kept = _find(job, entry_id)
    _check_if_match(if_match, kept)
    if spec.id is not None and spec.id != entry_id:
        raise ConflictError(f"the body names entry {spec.id}, the path {entry_id}")
    entry = timing.entry_of(spec, default_zone=kept.timezone, kept=kept, entry_id=entry_id, now=now)
    if entry == kept:
        return job, kept
    entries = list(timing.entries_of(job))
    entries[index] = entry
    return await _rewrite(conn, job, entries, now), entry


async def remove_entry(
    conn: AsyncConn, *, namespace: str, job_id: UUID, entry_id: UUID, if_match: str | None, now: datetime
) -> Job:
    """Delete one entry; the last one cannot go (delete the job instead)."""
    job = await jobs.locked(conn, namespace, job_id)
    index, kept = _find(job, entry_id)
    _check_if_match(if_match, kept)
    entries = list(timing.entries_of(job))
    if len(entries) == 1:
        raise ConflictError("a job needs a schedule entry: this is its last one; delete the job instead")
    del entries[index]
    return await _rewrite(conn, job, entries, now)
