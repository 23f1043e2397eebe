"""The one module that touches cursors: typed functions over the named queries in `sql/queries/`.

Callers own the transaction: they pass a connection (autocommit, or inside ``conn.transaction()``)
and get msgspec Structs back, never raw rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from psycopg.rows import RowMaker

from scheduler.db.connections import AsyncConn
from scheduler.db.queries import q
from scheduler.domain.models import (
    MISFIRE_POLICY,
    OVERLAP_POLICY,
    RUN_STATUS,
    RUN_TRIGGER,
    Action,
    Job,
    LastRun,
    LogAction,
    Misfire,
    OverlapPolicy,
    RetryPolicy,
    Run,
    RunStatus,
    RunTrigger,
)
from scheduler.domain.schedule import Timing
from scheduler.ids import uuid7, uuid7_time

_action_decoder = msgspec.json.Decoder(Action)
_labels_decoder = msgspec.json.Decoder(dict[str, str])
_json_encoder = msgspec.json.Encoder()
# A str can hold lone surrogates (decoded with "surrogateescape", cut mid-pair); UTF-8 cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _maker(build: Callable[[dict[str, int], Sequence[Any]], Any]) -> Callable[[Any], RowMaker[Any]]:
    """Wrap a builder into a psycopg row factory that resolves column positions once per result."""

    def factory(cursor: Any) -> RowMaker[Any]:
        # Field names straight from the result: cursor.description builds a Column object per
        # column, which costs more than the rest of a point lookup.
        result = cursor.pgresult
        names = {} if result is None else {result.fname(i).decode(): i for i in range(result.nfields)}
        return lambda values: build(names, values)

    return factory


def _build_job(c: dict[str, int], v: Sequence[Any]) -> Job:
    last_id = v[c["last_run_id"]]
    return Job(
        id=v[c["id"]],
        namespace=v[c["namespace"]],
        name=v[c["name"]],
        description=v[c["description"]],
        schedule=v[c["schedule"]],
        timezone=v[c["timezone"]],
        start_at=v[c["start_at"]],
        end_at=v[c["end_at"]],
        anchor_at=v[c["anchor_at"]],
        action=_action_decoder.decode(v[c["action"]]),
        timeout_s=v[c["timeout_s"]],
        retry=RetryPolicy(
            max_attempts=v[c["retry_max_attempts"]],
            min_backoff_s=v[c["retry_min_backoff_s"]],
            max_backoff_s=v[c["retry_max_backoff_s"]],
        ),
        misfire=Misfire(
            policy=MISFIRE_POLICY[v[c["misfire_policy"]]],
            grace_s=v[c["misfire_grace_s"]],
            window_s=v[c["misfire_window_s"]],
        ),
        overlap=OVERLAP_POLICY[v[c["overlap"]]],
        paused=v[c["paused"]],
        labels=_labels_decoder.decode(v[c["labels"]]),
        next_run_at=v[c["next_run_at"]],
        active_runs=v[c["active_runs"]],
        last_run=None
        if last_id is None
        else LastRun(
            id=last_id,
            status=RUN_STATUS[v[c["last_run_status"]]],
            scheduled_for=v[c["last_run_scheduled_for"]],
            finished_at=v[c["last_run_finished_at"]],
        ),
        created_at=v[c["created_at"]],
        updated_at=v[c["updated_at"]],
        version=v[c["version"]],
    )


def _build_run(c: dict[str, int], v: Sequence[Any]) -> Run:
    return Run(
        id=v[c["id"]],
        job_id=v[c["job_id"]],
        scheduled_for=v[c["scheduled_for"]],
        trigger=RUN_TRIGGER[v[c["trigger"]]],
        attempt=v[c["attempt"]],
        status=RUN_STATUS[v[c["status"]]],
        runner=v[c["runner"]],
        started_at=v[c["started_at"]],
        finished_at=v[c["finished_at"]],
        duration_ms=v[c["duration_ms"]],
        http_status=v[c["http_status"]],
        output=v[c["output"]],
        error=v[c["error"]],
        available_at=v[c["available_at"]],
        created_at=v[c["created_at"]],
    )


job_row = _maker(_build_job)
run_row = _maker(_build_run)


# ------------------------------------------------------------------------------------------ jobs


class JobValues(msgspec.Struct, kw_only=True):
    """Every column a create or update writes."""

    name: str
    description: str
    schedule: str
    timezone: str
    start_at: datetime | None
    end_at: datetime | None
    anchor_at: datetime
    action: Action
    timeout_s: int
    retry: RetryPolicy
    misfire: Misfire
    overlap: OverlapPolicy
    paused: bool
    labels: dict[str, str]
    next_run_at: datetime | None


def _job_params(values: JobValues) -> dict[str, Any]:
    return {
        "name": values.name,
        "description": values.description,
        "schedule": values.schedule,
        "timezone": values.timezone,
        "start_at": values.start_at,
        "end_at": values.end_at,
        "anchor_at": values.anchor_at,
        "action": _json_encoder.encode(values.action).decode(),
        "timeout_s": values.timeout_s,
        "retry_max_attempts": values.retry.max_attempts,
        "retry_min_backoff_s": values.retry.min_backoff_s,
        "retry_max_backoff_s": values.retry.max_backoff_s,
        "misfire_policy": values.misfire.policy.value,
        "misfire_grace_s": values.misfire.grace_s,
        "misfire_window_s": values.misfire.window_s,
        "overlap": values.overlap.value,
        "paused": values.paused,
        "labels": _json_encoder.encode(values.labels).decode(),
        "next_run_at": values.next_run_at,
    }


async def job_insert(conn: AsyncConn, *, job_id: UUID, namespace: str, values: JobValues) -> Job | None:
    """Create a job; None when its name is taken in the namespace."""
    params = _job_params(values) | {"id": job_id, "namespace": namespace}
    async with conn.cursor(row_factory=job_row) as cur:
        await cur.execute(q("job_insert"), params)
        found: Job | None = await cur.fetchone()
        return found


async def job_get(conn: AsyncConn, *, namespace: str, job_id: UUID) -> Job | None:
    """Return the job, or None when it does not exist in this namespace."""
    async with conn.cursor(row_factory=job_row) as cur:
        await cur.execute(q("job_get"), {"id": job_id, "namespace": namespace})
        found: Job | None = await cur.fetchone()
        return found


async def job_lock(conn: AsyncConn, *, namespace: str, job_id: UUID) -> Job | None:
    """Lock and return the job inside the caller's transaction."""
    async with conn.cursor(row_factory=job_row) as cur:
        await cur.execute(q("job_lock"), {"id": job_id, "namespace": namespace})
        found: Job | None = await cur.fetchone()
        return found


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
    async with conn.cursor(row_factory=job_row) as cur:
        await cur.execute(q("job_list_failing") if failing else q("job_list"), params)
        return await cur.fetchall()


async def job_update(conn: AsyncConn, *, namespace: str, job_id: UUID, values: JobValues) -> Job | None:
    """Overwrite the job's settable columns and bump its version; None when it is gone."""
    params = _job_params(values) | {"id": job_id, "namespace": namespace}
    async with conn.cursor(row_factory=job_row) as cur:
        await cur.execute(q("job_update"), params)
        found: Job | None = await cur.fetchone()
        return found


async def job_delete(conn: AsyncConn, *, namespace: str, job_id: UUID) -> bool:
    """Delete the job; False when it did not exist in this namespace."""
    cur = await conn.execute(q("job_delete"), {"id": job_id, "namespace": namespace})
    return cur.rowcount == 1


async def run_cancel_active_for_job(conn: AsyncConn, *, job_id: UUID, reason: str) -> list[UUID]:
    """Cancel the job's pending and running runs (caller holds the job's lock); return their ids."""
    cur = await conn.execute(q("run_cancel_active_for_job"), {"job_id": job_id, "reason": reason})
    return [row[0] for row in await cur.fetchall()]


# ---------------------------------------------------------------------------------- runner side


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


def _build_due(_: dict[str, int], v: Sequence[Any]) -> tuple[DueJob, datetime]:
    # Positional: the claim selects these columns in this order (see job_claim_due), and this runs
    # once per fire.
    (
        job_id,
        namespace,
        name,
        schedule,
        timezone,
        start_at,
        end_at,
        anchor_at,
        next_run_at,
        action,
        timeout_s,
        max_attempts,
        min_backoff_s,
        max_backoff_s,
        misfire_policy,
        grace_s,
        window_s,
        overlap,
        active_runs,
        db_now,
    ) = v
    unreadable = None
    try:
        decoded: Action = _action_decoder.decode(action)
    except msgspec.MsgspecError as exc:
        # Written by hand or by a newer version (a field this runner does not know): the claim
        # stops this job and fires the rest of the batch.
        decoded, unreadable = _STAND_IN, str(exc)
    due = DueJob(
        id=job_id,
        namespace=namespace,
        name=name,
        timing=Timing(schedule, timezone, anchor_at, start_at, end_at),
        next_run_at=next_run_at,
        action=decoded,
        timeout_s=timeout_s,
        retry=RetryPolicy(
            max_attempts=max_attempts, min_backoff_s=min_backoff_s, max_backoff_s=max_backoff_s
        ),
        misfire=Misfire(policy=MISFIRE_POLICY[misfire_policy], grace_s=grace_s, window_s=window_s),
        overlap=OVERLAP_POLICY[overlap],
        active_runs=active_runs,
        unreadable=unreadable,
    )
    return due, db_now


_due_row = _maker(_build_due)


async def job_claim_due(
    conn: AsyncConn, *, limit: int, now: datetime | None = None
) -> tuple[list[DueJob], datetime | None]:
    """Lock up to ``limit`` due jobs (caller's transaction); return them and the claim's now.

    Due means at ``now``, the database's clock unless a test passes one.
    """
    async with conn.cursor(row_factory=_due_row) as cur:
        await cur.execute(q("job_claim_due"), {"limit": limit, "now": now})
        rows: list[tuple[DueJob, datetime]] = await cur.fetchall()
    if not rows:
        return [], None
    return [due for due, _ in rows], rows[0][1]


class Move(msgspec.Struct, kw_only=True, frozen=True):
    """How a batch of recorded runs moves a job on: to its next slot (a claim), or not (a retry)."""

    job_id: UUID
    moves: bool
    next_run_at: datetime | None = None


async def job_lock_many(conn: AsyncConn, job_ids: Sequence[UUID]) -> None:
    """Lock jobs in id order (caller's transaction) before touching their runs."""
    await conn.execute(q("job_lock_many"), {"ids": sorted(set(job_ids))})


async def job_due_backlog(conn: AsyncConn, *, now: datetime | None = None) -> int:
    """How many jobs are due and not yet claimed, capped at a million.

    Due means at ``now``, the database's clock unless a test passes one.
    """
    cur = await conn.execute(q("job_due_backlog"), {"now": now})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


class NextDue(msgspec.Struct, frozen=True):
    """Seconds until the earliest slot and the earliest pending run (negative when overdue)."""

    slot_in_s: float | None
    pending_in_s: float | None


async def job_next_due(conn: AsyncConn) -> NextDue:
    """How long the runner may sleep, by the database clock."""
    cur = await conn.execute(q("job_next_due"))
    row = await cur.fetchone()
    if row is None:
        return NextDue(None, None)
    return NextDue(None if row[0] is None else float(row[0]), None if row[1] is None else float(row[1]))


class NewRun(msgspec.Struct, kw_only=True, frozen=True):
    """A run row a claim writes."""

    id: UUID
    job_id: UUID
    scheduled_for: datetime
    trigger: RunTrigger
    attempt: int
    status: RunStatus
    available_in_s: float | None = None
    """For a pending run: seconds from the database's now until it may start; None waits for the
    job's running run to end (overlap "queue")."""
    error: str | None = None


class InsertedRun(msgspec.Struct, kw_only=True, frozen=True):
    """What the database assigned to a newly recorded run."""

    id: UUID
    scheduled_for: datetime
    status: RunStatus
    lease_token: UUID | None
    started_at: datetime | None


async def run_record_many(
    conn: AsyncConn,
    runs: Sequence[NewRun],
    moves: Sequence[Move],
    *,
    runner: str,
    lease_s: float,
    now: datetime | None = None,
) -> list[InsertedRun]:
    """Record runs and move their jobs on, in one statement, at ``now`` (the database's unless given).

    Runs starting now get a lease; runs lost to the unique slot key are left out of the result, and
    the jobs' counts of unfinished runs follow the rows actually inserted.
    """
    if not runs and not moves:
        return []
    cur = await conn.execute(
        q("run_record_many"),
        {
            "ids": [r.id for r in runs],
            "job_ids": [r.job_id for r in runs],
            "scheduled_fors": [r.scheduled_for for r in runs],
            "triggers": [r.trigger.value for r in runs],
            "attempts": [r.attempt for r in runs],
            "statuses": [r.status.value for r in runs],
            "available_in_s": [r.available_in_s for r in runs],
            "errors": [r.error for r in runs],
            "move_job_ids": [m.job_id for m in moves],
            "moves": [m.moves for m in moves],
            "next_run_ats": [m.next_run_at for m in moves],
            "runner": runner,
            "lease_s": lease_s,
            "now": now,
        },
    )
    return [
        InsertedRun(
            id=row[0], scheduled_for=row[1], status=RUN_STATUS[row[2]], lease_token=row[3], started_at=row[4]
        )
        for row in await cur.fetchall()
    ]


class Outcome(msgspec.Struct, kw_only=True, frozen=True):
    """How one attempt ended, as its runner saw it."""

    run_id: UUID
    job_id: UUID
    scheduled_for: datetime
    lease_token: UUID | None
    """None for the rescuer: accepted only if the run's lease has expired."""
    status: RunStatus
    duration_ms: int | None
    http_status: int | None = None
    output: str | None = None
    error: str | None = None


def storable_text(value: str | None) -> str | None:
    """Text PostgreSQL accepts whatever a target sent: NUL dropped, lone surrogates replaced (U+FFFD).

    A single unstorable character would otherwise fail the whole statement, and with it every other
    outcome of the batch (SPEC 3.2: any answer a target sends is recorded).
    """
    if value is None or (value.isascii() and "\x00" not in value):
        return value
    return _SURROGATE.sub("\ufffd", value.replace("\x00", ""))


async def run_complete_many(
    conn: AsyncConn, outcomes: Sequence[Outcome], *, now: datetime | None = None
) -> set[UUID]:
    """Write outcomes under their fencing tokens (caller's transaction, jobs locked first).

    Returns the ids whose outcome was accepted; the others had lost their lease. An outcome without
    a token (the rescuer's) is accepted only once the lease has expired at ``now`` (the database's
    clock unless given). Output and error texts are made storable first (`storable_text`).
    """
    if not outcomes:
        return set()
    cur = await conn.execute(
        q("run_complete_many"),
        {
            "ids": [o.run_id for o in outcomes],
            "scheduled_fors": [o.scheduled_for for o in outcomes],
            "lease_tokens": [o.lease_token for o in outcomes],
            "statuses": [o.status.value for o in outcomes],
            "durations_ms": [o.duration_ms for o in outcomes],
            "http_statuses": [o.http_status for o in outcomes],
            "outputs": [storable_text(o.output) for o in outcomes],
            "errors": [storable_text(o.error) for o in outcomes],
            "now": now,
        },
    )
    return {row[0] for row in await cur.fetchall()}


# ------------------------------------------------------------------------------------------ runs


def _slot_bounds(run_id: UUID) -> tuple[datetime, datetime] | None:
    slot = uuid7_time(run_id)
    if slot is None or slot > datetime.max.replace(tzinfo=UTC) - timedelta(milliseconds=1):
        return None
    return slot, slot + timedelta(milliseconds=1)


async def run_get(conn: AsyncConn, *, namespace: str, run_id: UUID) -> Run | None:
    """Return the run, or None when it does not exist in this namespace."""
    bounds = _slot_bounds(run_id)
    if bounds is None:
        return None
    async with conn.cursor(row_factory=run_row) as cur:
        await cur.execute(
            q("run_get"),
            {"id": run_id, "slot_from": bounds[0], "slot_to": bounds[1], "namespace": namespace},
        )
        found: Run | None = await cur.fetchone()
        return found


# Past now, for clocks that disagree: a manual run is slotted by the API's clock.
_FIRST_PAGE_SLACK = timedelta(hours=1)


async def run_list_for_job(
    conn: AsyncConn,
    *,
    job_id: UUID,
    before: tuple[datetime, int] | None,
    limit: int,
    status: RunStatus | None = None,
) -> list[Run]:
    """Return one page of a job's history, newest slot first, before the (slot, attempt) cursor.

    The first page starts just past now: runs exist only for slots that came due (and manual runs,
    slotted at their trigger), so the partitions made ahead for the coming week are pruned.
    """
    if before is None:
        before = (datetime.now(UTC) + _FIRST_PAGE_SLACK, 2**31 - 1)
    before_slot, before_attempt = before
    async with conn.cursor(row_factory=run_row) as cur:
        await cur.execute(
            q("run_list_for_job"),
            {
                "job_id": job_id,
                "before_slot": before_slot,
                "before_attempt": before_attempt,
                "status": status.value if status is not None else None,
                "limit": limit,
            },
        )
        return await cur.fetchall()


# --------------------------------------------------------------------------------------- tenants


class ApiKey(msgspec.Struct, kw_only=True):
    """An API key as listed (never the key itself)."""

    id: UUID
    namespace: str
    prefix: str
    description: str
    created_at: datetime
    revoked_at: datetime | None


def _api_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        id=row[0], namespace=row[1], prefix=row[2], description=row[3], created_at=row[4], revoked_at=row[5]
    )


async def namespace_ensure(conn: AsyncConn, *, name: str) -> None:
    """Create the namespace if it does not exist."""
    await conn.execute(q("namespace_ensure"), {"name": name})


async def api_key_insert(
    conn: AsyncConn, *, key_id: UUID, namespace: str, prefix: str, key_hash: bytes, description: str
) -> ApiKey:
    """Store a new key's hash."""
    cur = await conn.execute(
        q("api_key_insert"),
        {
            "id": key_id,
            "namespace": namespace,
            "prefix": prefix,
            "key_hash": key_hash,
            "description": description,
        },
    )
    row = await cur.fetchone()
    if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
        raise RuntimeError("api key insert returned nothing")
    return _api_key(row)


async def api_key_lookup(conn: AsyncConn, *, key_hash: bytes) -> str | None:
    """Return the namespace of a live key with this hash."""
    cur = await conn.execute(q("api_key_lookup"), {"key_hash": key_hash})
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def api_key_list(conn: AsyncConn, *, namespace: str | None) -> list[ApiKey]:
    """Return keys, newest first."""
    cur = await conn.execute(q("api_key_list"), {"namespace": namespace})
    return [_api_key(row) for row in await cur.fetchall()]


async def api_key_revoke(conn: AsyncConn, *, key: str) -> ApiKey | None:
    """Revoke a key by id or prefix; None when no live key matches."""
    cur = await conn.execute(q("api_key_revoke"), {"key": key})
    row = await cur.fetchone()
    return None if row is None else _api_key(row)


# ---------------------------------------------------------------------------- runs by requests


async def run_insert_one(conn: AsyncConn, run: NewRun) -> Run | None:
    """Record a run made by a request; None if its (job, slot, attempt) already exists."""
    async with conn.cursor(row_factory=run_row) as cur:
        await cur.execute(
            q("run_insert_one"),
            {
                "id": run.id,
                "job_id": run.job_id,
                "scheduled_for": run.scheduled_for,
                "trigger": run.trigger.value,
                "attempt": run.attempt,
                "status": run.status.value,
                "available_in_s": run.available_in_s,
                "error": run.error,
            },
        )
        found: Run | None = await cur.fetchone()
        return found


async def run_cancel(conn: AsyncConn, *, run_id: UUID, scheduled_for: datetime, reason: str) -> Run | None:
    """Cancel one unfinished run (caller holds its job's lock); None if it had already ended."""
    async with conn.cursor(row_factory=run_row) as cur:
        await cur.execute(q("run_cancel"), {"id": run_id, "scheduled_for": scheduled_for, "reason": reason})
        found: Run | None = await cur.fetchone()
        return found


async def run_latest_attempt(conn: AsyncConn, *, job_id: UUID, scheduled_for: datetime) -> int:
    """Return the newest attempt number recorded for a slot (0 when none)."""
    cur = await conn.execute(q("run_latest_attempt"), {"job_id": job_id, "scheduled_for": scheduled_for})
    row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def run_promote_queued(conn: AsyncConn, *, job_ids: Sequence[UUID]) -> int:
    """Make the queued runs of these jobs available now; return how many."""
    if not job_ids:
        return 0
    cur = await conn.execute(q("run_promote_queued"), {"job_ids": list(job_ids)})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def run_has_queued(conn: AsyncConn, *, job_id: UUID, overlap: OverlapPolicy, active_runs: int) -> bool:
    """Whether the job has a run waiting behind its running one (overlap `queue` keeps one at most).

    Only a `queue` job with unfinished runs can have one, so for any other the database is not asked.
    """
    if overlap is not OverlapPolicy.QUEUE or active_runs == 0:
        return False
    cur = await conn.execute(q("run_has_queued"), {"job_id": job_id})
    row = await cur.fetchone()
    return bool(row and row[0])


# -------------------------------------------------------------------------- leases and rescue


class Lease(msgspec.Struct, kw_only=True, frozen=True):
    """A runner's hold on a running run."""

    run_id: UUID
    scheduled_for: datetime
    lease_token: UUID


class ClaimedRun(msgspec.Struct, kw_only=True, frozen=True):
    """A pending run just started by this runner, with its job's execution settings."""

    run_id: UUID
    job_id: UUID
    scheduled_for: datetime
    trigger: RunTrigger
    attempt: int
    lease_token: UUID
    started_at: datetime
    namespace: str
    job_name: str
    action: Action
    timeout_s: int
    retry: RetryPolicy
    overlap: OverlapPolicy


async def run_claim_pending(
    conn: AsyncConn, *, limit: int, runner: str, lease_s: float, now: datetime | None = None
) -> list[ClaimedRun]:
    """Start up to ``limit`` pending runs whose time has come at ``now`` (the database's unless given)."""
    cur = await conn.execute(
        q("run_claim_pending"), {"limit": limit, "runner": runner, "lease_s": lease_s, "now": now}
    )
    return [
        ClaimedRun(
            run_id=row[0],
            job_id=row[1],
            scheduled_for=row[2],
            trigger=RUN_TRIGGER[row[3]],
            attempt=row[4],
            lease_token=row[5],
            started_at=row[6],
            namespace=row[7],
            job_name=row[8],
            action=_action_decoder.decode(row[9]),
            timeout_s=row[10],
            retry=RetryPolicy(max_attempts=row[11], min_backoff_s=row[12], max_backoff_s=row[13]),
            overlap=OVERLAP_POLICY[row[14]],
        )
        for row in await cur.fetchall()
    ]


def _lease_params(leases: Sequence[Lease]) -> dict[str, Any]:
    return {
        "ids": [lease.run_id for lease in leases],
        "scheduled_fors": [lease.scheduled_for for lease in leases],
        "lease_tokens": [lease.lease_token for lease in leases],
    }


async def run_heartbeat_many(
    conn: AsyncConn, leases: Sequence[Lease], *, lease_s: float, now: datetime | None = None
) -> set[UUID]:
    """Renew leases; return the ids still owned (the rest were cancelled or rescued).

    Each lease then runs ``lease_s`` past ``now``, the database's clock unless a test passes one.
    """
    if not leases:
        return set()
    cur = await conn.execute(
        q("run_heartbeat_many"), _lease_params(leases) | {"lease_s": lease_s, "now": now}
    )
    return {row[0] for row in await cur.fetchall()}


async def run_release_many(conn: AsyncConn, leases: Sequence[Lease]) -> int:
    """Hand unfinished runs back as pending, available at once; return how many."""
    if not leases:
        return 0
    cur = await conn.execute(q("run_release_many"), _lease_params(leases))
    return len(await cur.fetchall())


class ExpiredRun(msgspec.Struct, kw_only=True, frozen=True):
    """A running run whose lease ran out."""

    run_id: UUID
    job_id: UUID
    scheduled_for: datetime
    trigger: RunTrigger
    attempt: int
    runner: str | None
    retry: RetryPolicy
    overlap: OverlapPolicy


async def run_find_expired(conn: AsyncConn, *, limit: int, now: datetime | None = None) -> list[ExpiredRun]:
    """Return running runs whose lease has expired, oldest expiry first.

    Expired means at ``now``, the database's clock unless a test passes one.
    """
    cur = await conn.execute(q("run_find_expired"), {"limit": limit, "now": now})
    return [
        ExpiredRun(
            run_id=row[0],
            job_id=row[1],
            scheduled_for=row[2],
            trigger=RUN_TRIGGER[row[3]],
            attempt=row[4],
            runner=row[5],
            retry=RetryPolicy(max_attempts=row[6], min_backoff_s=row[7], max_backoff_s=row[8]),
            overlap=OVERLAP_POLICY[row[9]],
        )
        for row in await cur.fetchall()
    ]


# --------------------------------------------------------------------------------- the service


async def health_check(conn: AsyncConn) -> None:
    """Prove the database answers."""
    await conn.execute(q("health_check"))


async def listen(conn: AsyncConn) -> None:
    """Subscribe a runner's listening connection to the wake, cancel and secrets channels."""
    await conn.execute(q("listen_wake"))
    await conn.execute(q("listen_cancel"))
    await conn.execute(q("listen_secrets"))


class PartitionUpkeep(msgspec.Struct, kw_only=True, frozen=True):
    """What one round of partition upkeep did."""

    locked: bool
    created: int = 0
    dropped: int = 0


async def run_partitions_upkeep(
    conn: AsyncConn, *, days_ahead: int, retention_days: int, today: date | None = None
) -> PartitionUpkeep:
    """Create partitions ahead and drop expired ones, if no other runner is doing it right now.

    Days count from ``today``, the database's date unless a test passes one.
    """
    async with conn.transaction():
        cur = await conn.execute(q("maintenance_try_lock"))
        row = await cur.fetchone()
        if not row or not row[0]:
            return PartitionUpkeep(locked=False)
        await conn.execute(q("lock_timeout_short"))
        cur = await conn.execute(q("run_partitions_ensure"), {"days_ahead": days_ahead, "today": today})
        created_row = await cur.fetchone()
        cur = await conn.execute(
            q("run_partitions_drop_expired"), {"retention_days": retention_days, "today": today}
        )
        dropped_row = await cur.fetchone()
    return PartitionUpkeep(
        locked=True,
        created=int(created_row[0]) if created_row else 0,
        dropped=int(dropped_row[0]) if dropped_row else 0,
    )


async def signing_secrets_current(conn: AsyncConn, *, namespace: str) -> list[str]:
    """The namespace's unexpired signing secrets, newest first."""
    cur = await conn.execute(q("signing_secrets_current"), {"namespace": namespace})
    return [str(row[0]) for row in await cur.fetchall()]


async def signing_secret_create(
    conn: AsyncConn, *, namespace: str, secret: str, grace_s: float | None
) -> None:
    """Make ``secret`` the namespace's current one (caller's transaction).

    With ``grace_s`` this is a rotation: the old current secret stays valid that long. Without it, the
    secret is only added when the namespace has no current one.
    """
    await conn.execute(q("namespace_ensure"), {"name": namespace})
    if grace_s is not None:
        await conn.execute(q("signing_secret_expire_current"), {"namespace": namespace, "grace_s": grace_s})
    await conn.execute(q("signing_secret_insert"), {"id": uuid7(), "namespace": namespace, "secret": secret})
    await conn.execute(q("signing_secrets_changed"), {"namespace": namespace})


async def namespace_usage_add(conn: AsyncConn, *, namespace: str, delta: int) -> int:
    """Count jobs into or out of a namespace (caller's transaction); return its new job count."""
    cur = await conn.execute(q("namespace_usage_add"), {"namespace": namespace, "delta": delta})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


class SigningSecret(msgspec.Struct, kw_only=True, frozen=True):
    """A namespace's signing secret that is still valid; ``expires_at`` is None for the current one."""

    secret: str
    created_at: datetime
    expires_at: datetime | None


async def signing_secrets_valid(conn: AsyncConn, *, namespace: str) -> list[SigningSecret]:
    """The namespace's secrets that still verify, newest (the current one) first."""
    cur = await conn.execute(q("signing_secrets_valid"), {"namespace": namespace})
    return [
        SigningSecret(secret=row[0], created_at=row[1], expires_at=row[2]) for row in await cur.fetchall()
    ]


# ----------------------------------------------------------------------- runs across a namespace

_BEYOND_EVERY_ID = UUID(int=2**128 - 1)
_BEFORE_EVERY_SLOT = datetime(1, 1, 2, tzinfo=UTC)


async def run_list_namespace(
    conn: AsyncConn,
    *,
    namespace: str,
    now: datetime,
    limit: int,
    before_id: UUID | None = None,
    job_id: UUID | None = None,
    status: RunStatus | None = None,
    trigger: RunTrigger | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Run]:
    """Return one page of the namespace's runs, newest first by id (its slot, to the millisecond).

    The page ends before ``before_id`` (the cursor), before ``until`` and just past ``now``: runs
    exist only for slots that came due, so the partitions made ahead are pruned, as are those past
    the cursor's millisecond.
    """
    before_slot = now + _FIRST_PAGE_SLACK
    if until is not None:
        before_slot = min(before_slot, until)
    if before_id is not None:
        try:
            cursor_slot = uuid7_time(before_id)
            if cursor_slot is not None:
                before_slot = min(before_slot, cursor_slot + timedelta(milliseconds=1))
        except OverflowError:  # a UUIDv7 past the year 9999 is newer than every run: no bound
            pass
    params: dict[str, Any] = {
        "namespace": namespace,
        "job_id": job_id,
        "before_id": before_id or _BEYOND_EVERY_ID,
        "before_slot": before_slot,
        "since": since or _BEFORE_EVERY_SLOT,
        "status": status.value if status is not None else None,
        "trigger": trigger.value if trigger is not None else None,
        "limit": limit,
    }
    query = q("run_list_namespace") if job_id is None else q("run_list_namespace_job")
    async with conn.cursor(row_factory=run_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


# ------------------------------------------------------------------------------- the web console


async def console_secret(conn: AsyncConn, *, candidate: bytes) -> bytes:
    """The database's console signing secret, storing ``candidate`` when there is none yet."""
    cur = await conn.execute(q("console_secret_ensure"), {"secret": candidate})
    row = await cur.fetchone()
    if row is None:  # pragma: no cover - the insert or the existing row always answers
        raise RuntimeError("console secret neither made nor found")
    return bytes(row[0])


async def job_pause_note_set(conn: AsyncConn, *, namespace: str, job_id: UUID, note: str | None) -> None:
    """Set or clear (None) the note on a job (caller holds its lock)."""
    await conn.execute(q("job_pause_note_set"), {"id": job_id, "namespace": namespace, "note": note})


async def job_pause_notes(conn: AsyncConn, *, namespace: str, job_ids: Sequence[UUID]) -> dict[UUID, str]:
    """The pause notes of these jobs, by id (jobs without one are left out)."""
    if not job_ids:
        return {}
    cur = await conn.execute(q("job_pause_notes"), {"ids": list(job_ids), "namespace": namespace})
    return {row[0]: str(row[1]) for row in await cur.fetchall()}


class RecentOutcomes(msgspec.Struct, kw_only=True, frozen=True):
    """A job's last runs as the console's jobs page shows them."""

    outcomes: list[RunStatus]
    """Statuses of the last 50 runs, oldest first."""
    p95_lateness_s: float | None
    """95th percentile of started_at - scheduled_for over the scheduled ones among them."""


async def job_recent_outcomes(
    conn: AsyncConn, *, job_ids: Sequence[UUID], now: datetime
) -> dict[UUID, RecentOutcomes]:
    """The outcome strip and p95 lateness of each job (ids the caller already scoped)."""
    if not job_ids:
        return {}
    cur = await conn.execute(
        q("job_recent_outcomes"), {"ids": list(job_ids), "before_slot": now + _FIRST_PAGE_SLACK}
    )
    return {
        row[0]: RecentOutcomes(
            outcomes=[RUN_STATUS[status] for status in row[1]],
            p95_lateness_s=None if row[2] is None else float(row[2]),
        )
        for row in await cur.fetchall()
    }


async def run_attempts(conn: AsyncConn, *, job_id: UUID, scheduled_for: datetime) -> list[Run]:
    """Every attempt of one slot, first to last."""
    async with conn.cursor(row_factory=run_row) as cur:
        await cur.execute(q("run_attempts"), {"job_id": job_id, "scheduled_for": scheduled_for})
        return await cur.fetchall()


async def job_names(conn: AsyncConn, *, namespace: str, job_ids: Sequence[UUID]) -> dict[UUID, str]:
    """The names of these jobs of the namespace, by id."""
    if not job_ids:
        return {}
    cur = await conn.execute(q("job_names"), {"ids": list(set(job_ids)), "namespace": namespace})
    return {row[0]: str(row[1]) for row in await cur.fetchall()}
