"""The queries of `sql/queries/jobs.sql`: jobs as requests change them and as runners claim them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from scheduler.db.connections import AsyncConn
from scheduler.db.rows import built, column, execute, fetch_all, fetch_one, struct, struct_params, unread
from scheduler.domain.models import (
    MISFIRE_POLICY,
    OVERLAP_POLICY,
    Action,
    Job,
    JobValues,
    LogAction,
    Misfire,
    OverlapPolicy,
    RetryPolicy,
)
from scheduler.domain.schedule import Entry, Exclusions, Timing

_action_decoder = msgspec.json.Decoder(Action)
_entries_decoder = msgspec.json.Decoder(tuple[Entry, ...])
_exclusions_decoder = msgspec.json.Decoder(Exclusions)
_json_encoder = msgspec.json.Encoder()

_JOB = struct(
    Job,
    "job_insert",
    "job_create",
    "job_insert_many",
    "job_update_many",
    "job_get",
    "job_lock",
    "job_get_by_name",
    "job_lock_by_name",
    "job_lock_for_apply",
    "job_list",
    "job_list_failing",
    "job_update",
)
_ID = column("id", UUID, "job_delete", "job_delete_many")
unread("id", queries=("job_lock_many",))
unread("pg_advisory_xact_lock", queries=("job_apply_lock",))


# -------------------------------------------------------------------------------------- requests


_job_params = struct_params(JobValues)


async def job_insert(conn: AsyncConn, values: JobValues) -> Job | None:
    """Create a job; None when its name is taken in its namespace."""
    return await fetch_one(conn, _JOB, "job_insert", _job_params(values))


async def job_create(conn: AsyncConn, values: JobValues, *, shard: int, quota: int) -> Job | None:
    """Create a job counted into ``shard`` of its namespace's count, in one statement.

    None when that shard has no room under its share of ``quota`` (or is not there yet): nothing is
    written. A name taken in the namespace raises `psycopg.errors.UniqueViolation`, and the count
    is undone with the statement.
    """
    params = _job_params(values)
    params["shard"] = shard
    params["quota"] = quota
    return await fetch_one(conn, _JOB, "job_create", params)


def _columns(values: Sequence[JobValues]) -> dict[str, list[Any]]:
    """The statement parameters of many jobs, one list per column (what `unnest` takes)."""
    rows = [_job_params(value) for value in values]
    return {name: [row[name] for row in rows] for name in rows[0]}


async def job_insert_many(conn: AsyncConn, values: Sequence[JobValues]) -> list[Job]:
    """Create jobs in one statement; a job whose name is taken in its namespace is left out."""
    if not values:
        return []
    return await fetch_all(conn, _JOB, "job_insert_many", _columns(values))


async def job_update_many(conn: AsyncConn, values: Sequence[JobValues]) -> list[Job]:
    """Overwrite jobs as `job_update` does each, in one statement; those gone are left out."""
    if not values:
        return []
    return await fetch_all(conn, _JOB, "job_update_many", _columns(values))


async def job_get(conn: AsyncConn, *, namespace: str, job_id: UUID) -> Job | None:
    """Return the job, or None when it does not exist in this namespace."""
    return await fetch_one(conn, _JOB, "job_get", {"id": job_id, "namespace": namespace})


async def job_lock(conn: AsyncConn, *, namespace: str, job_id: UUID) -> Job | None:
    """Lock and return the job inside the caller's transaction."""
    return await fetch_one(conn, _JOB, "job_lock", {"id": job_id, "namespace": namespace})


async def job_get_by_name(conn: AsyncConn, *, namespace: str, name: str) -> Job | None:
    """Return the job of this name, or None."""
    return await fetch_one(conn, _JOB, "job_get_by_name", {"namespace": namespace, "name": name})


async def job_lock_by_name(conn: AsyncConn, *, namespace: str, name: str) -> Job | None:
    """Lock and return the job of this name inside the caller's transaction."""
    return await fetch_one(conn, _JOB, "job_lock_by_name", {"namespace": namespace, "name": name})


async def job_apply_lock(conn: AsyncConn, *, namespace: str) -> None:
    """Wait for, then hold to the commit, the namespace's turn to apply a set of jobs."""
    await execute(conn, "job_apply_lock", {"namespace": namespace})


async def job_lock_for_apply(
    conn: AsyncConn, *, namespace: str, names: Sequence[str], selector: dict[str, str] | None
) -> list[Job]:
    """Lock, in name order, the jobs named and (with a ``selector``) those whose labels hold it."""
    params = {
        "namespace": namespace,
        "names": list(names),
        "prune": selector is not None,
        "selector": _json_encoder.encode(selector or {}).decode(),
    }
    return await fetch_all(conn, _JOB, "job_lock_for_apply", params)


# Names are 1-128 of [A-Za-z0-9._-], so a prefix's range ends before the prefix followed by this.
_PAST_NAMES = "\x7f"


async def job_list(
    conn: AsyncConn,
    *,
    namespace: str,
    after_name: str | None,
    limit: int,
    name_prefix: str | None = None,
    paused: bool | None = None,
    labels: dict[str, str] | None = None,
    failing: bool = False,
) -> list[Job]:
    """Return one page of the namespace's jobs in name order, after ``after_name``.

    ``failing`` keeps only jobs whose last run did not succeed (the console's filter).
    """
    prefix = name_prefix or ""
    params = {
        "namespace": namespace,
        "after_name": after_name or "",
        "prefix_low": prefix,
        "prefix_high": prefix + _PAST_NAMES,
        "labels": _json_encoder.encode(labels or {}).decode(),
        "paused": paused,
        "limit": limit,
    }
    if failing:
        return await fetch_all(conn, _JOB, "job_list_failing", params)
    return await fetch_all(conn, _JOB, "job_list", params)


def _job_name(id: UUID, name: str) -> tuple[UUID, str]:  # noqa: A002 - named after its column
    return id, name


_JOB_NAME = built(_job_name, "job_names")


async def job_names(conn: AsyncConn, *, namespace: str, job_ids: Sequence[UUID]) -> dict[UUID, str]:
    """The names of these jobs of the namespace, by id."""
    if not job_ids:
        return {}
    params = {"ids": list(set(job_ids)), "namespace": namespace}
    return dict(await fetch_all(conn, _JOB_NAME, "job_names", params))


async def job_update(conn: AsyncConn, values: JobValues) -> Job | None:
    """Overwrite the settable columns of job ``values.id`` and bump its version; None when it is gone.

    The job is looked for in ``values.namespace`` only.
    """
    return await fetch_one(conn, _JOB, "job_update", _job_params(values))


async def job_pause_note_set(conn: AsyncConn, *, namespace: str, job_id: UUID, note: str | None) -> None:
    """Set or clear (None) the note on a job (caller holds its lock)."""
    await execute(conn, "job_pause_note_set", {"id": job_id, "namespace": namespace, "note": note})


async def job_delete_many(conn: AsyncConn, *, namespace: str, job_ids: Sequence[UUID]) -> int:
    """Delete these jobs of the namespace in one statement; how many there were.

    Only for jobs with no unfinished runs (the caller holds their locks): nothing is cancelled.
    """
    if not job_ids:
        return 0
    params = {"namespace": namespace, "ids": list(job_ids)}
    return len(await fetch_all(conn, _ID, "job_delete_many", params))


async def job_delete(conn: AsyncConn, *, namespace: str, job_id: UUID) -> bool:
    """Delete the job; False when it did not exist in this namespace.

    Its unfinished runs are the caller's to cancel first (`run_cancel_active_for_job`).
    """
    return await fetch_one(conn, _ID, "job_delete", {"id": job_id, "namespace": namespace}) is not None


# ------------------------------------------------------------------------------------ the runner


class DueJob(msgspec.Struct, kw_only=True):
    """A job locked by a claim, with what the runner needs to fire it."""

    id: UUID
    namespace: str
    name: str
    timing: Timing
    next_run_at: datetime
    action: Action
    timeout_s: int
    retry: RetryPolicy
    misfire: Misfire
    overlap: OverlapPolicy
    active_runs: int
    unreadable: str | None = None
    """Why the stored action could not be read (``action`` is then a stand-in never executed)."""


_STAND_IN = LogAction()
# Actions decoded lately, by their stored JSON: jobs sharing an action (or one job claimed every
# second) decode it once. Shared, so never changed in place (nothing does); a bounded dict emptied
# when full, so a fleet of distinct actions costs at most what it did without it.
_ACTIONS_KEPT = 4096
_actions: dict[bytes, Action] = {}


class _Claimed(msgspec.Struct, frozen=True):
    """One row of the claim: the job, and the claim's now (the same on every row)."""

    job: DueJob
    db_now: datetime


def _due(  # noqa: PLR0917 - one parameter per column of the claim, in its order
    id: UUID,  # noqa: A002 - named after its column
    namespace: str,
    name: str,
    schedule: str,
    timezone: str,
    start_at: datetime | None,
    end_at: datetime | None,
    anchor_at: datetime,
    next_run_at: datetime,
    action: bytes,
    timeout_s: int,
    retry_max_attempts: int,
    retry_min_backoff_s: float,
    retry_max_backoff_s: float,
    misfire_policy: str,
    misfire_grace_s: int,
    misfire_window_s: int,
    overlap: str,
    active_runs: int,
    schedules: bytes,
    exclusions: bytes | None,
    db_now: datetime,
) -> _Claimed:
    # Runs once per fire: the builder takes the columns as they come, with no lookup per row.
    unreadable = None
    decoded: Action | None = _actions.get(action)
    if decoded is None:
        try:
            decoded = _action_decoder.decode(action)
        except msgspec.MsgspecError as exc:
            # Written by hand or by a newer version (a field this runner does not know): the claim
            # stops this job and fires the rest of the batch.
            decoded, unreadable = _STAND_IN, str(exc)
        else:
            if len(_actions) >= _ACTIONS_KEPT:
                _actions.clear()
            _actions[action] = decoded
    due = DueJob(
        id=id,
        namespace=namespace,
        name=name,
        timing=Timing(
            schedule,
            timezone,
            anchor_at,
            start_at,
            end_at,
            () if schedules == b"[]" else _entries_decoder.decode(schedules),
            None if exclusions is None else _exclusions_decoder.decode(exclusions),
        ),
        next_run_at=next_run_at,
        action=decoded,
        timeout_s=timeout_s,
        retry=RetryPolicy(
            max_attempts=retry_max_attempts,
            min_backoff_s=retry_min_backoff_s,
            max_backoff_s=retry_max_backoff_s,
        ),
        misfire=Misfire(
            policy=MISFIRE_POLICY[misfire_policy], grace_s=misfire_grace_s, window_s=misfire_window_s
        ),
        overlap=OVERLAP_POLICY[overlap],
        active_runs=active_runs,
        unreadable=unreadable,
    )
    return _Claimed(due, db_now)


_DUE = built(_due, "job_claim_due")


async def job_claim_due(
    conn: AsyncConn, *, limit: int, now: datetime | None = None, lookahead_s: float = 0.0
) -> tuple[list[DueJob], datetime | None]:
    """Lock up to ``limit`` due jobs (caller's transaction); return them and the claim's now.

    Due means at ``now``, the database's clock unless a test passes one; HTTP jobs whose overlap
    policy cannot change before their slot are due ``lookahead_s`` early (their ``next_run_at`` is
    then later than the claim's now).
    """
    claimed = await fetch_all(
        conn, _DUE, "job_claim_due", {"limit": limit, "now": now, "lookahead_s": float(lookahead_s)}
    )
    if not claimed:
        return [], None
    return [row.job for row in claimed], claimed[0].db_now


async def job_lock_many(conn: AsyncConn, job_ids: Sequence[UUID]) -> None:
    """Lock jobs in id order (caller's transaction) before touching their runs."""
    await execute(conn, "job_lock_many", {"ids": sorted(set(job_ids))})


class NextDue(msgspec.Struct, frozen=True):
    """Seconds until the earliest slot and the earliest pending run (negative when overdue)."""

    slot_in_s: float | None
    pending_in_s: float | None


def _next_due(slot_in_s: Decimal | None, pending_in_s: Decimal | None) -> NextDue:
    return NextDue(
        None if slot_in_s is None else float(slot_in_s), None if pending_in_s is None else float(pending_in_s)
    )


_NEXT_DUE = built(_next_due, "job_next_due")


async def job_next_due(conn: AsyncConn, *, lookahead_s: float = 0.0) -> NextDue:
    """How long the runner may sleep, by the database clock: until the earliest job is claimable.

    That is ``lookahead_s`` before its slot when `job_claim_due` may take it that early.
    """
    found = await fetch_one(conn, _NEXT_DUE, "job_next_due", {"lookahead_s": float(lookahead_s)})
    return found or NextDue(None, None)


_BACKLOG = column("backlog", int, "job_due_backlog")


async def job_due_backlog(conn: AsyncConn, *, now: datetime | None = None) -> int:
    """How many jobs are due and not yet claimed, capped at a million.

    Due means at ``now``, the database's clock unless a test passes one.
    """
    return await fetch_one(conn, _BACKLOG, "job_due_backlog", {"now": now}) or 0


class FailingJobs(msgspec.Struct, frozen=True):
    """How many jobs of one namespace have consecutive failures."""

    namespace: str
    failing: int


_FAILING = struct(FailingJobs, "job_count_failing")


async def job_count_failing(conn: AsyncConn) -> list[FailingJobs]:
    """The namespaces with failing jobs (consecutive_failures > 0) and how many each has."""
    return await fetch_all(conn, _FAILING, "job_count_failing")
