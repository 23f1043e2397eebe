"""Typed functions over the named queries in `sql/queries/`: what the rest of the service calls.

With `scheduler.db.rows`, which reads their rows, this is the only code that touches cursors.
Callers own the transaction: they pass a connection (autocommit, or inside ``conn.transaction()``)
and get msgspec Structs back, never raw rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from scheduler.db.connections import AsyncConn, SyncConn
from scheduler.db.queries import q
from scheduler.db.rows import built, column, execute, fetch_all, fetch_one, struct, struct_params, unread
from scheduler.domain.models import (
    MISFIRE_POLICY,
    OVERLAP_POLICY,
    RUN_STATUS,
    Action,
    Job,
    JobValues,
    LogAction,
    Misfire,
    Outcome,
    OverlapPolicy,
    RetryPolicy,
    Run,
    RunStatus,
    RunTrigger,
)
from scheduler.domain.schedule import Timing
from scheduler.ids import uuid7_time

_action_decoder = msgspec.json.Decoder(Action)
_json_encoder = msgspec.json.Encoder()
# A str can hold lone surrogates (decoded with "surrogateescape", cut mid-pair); UTF-8 cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")

_JOB = struct(Job, "job_insert", "job_get", "job_lock", "job_list", "job_list_failing", "job_update")
_RUN = struct(
    Run,
    "run_get",
    "run_list_for_job",
    "run_insert_one",
    "run_cancel",
    "run_list_namespace",
    "run_list_namespace_job",
    "run_attempts",
)
_ID = column("id", UUID, "job_delete", "run_heartbeat_many", "run_complete_many")
_NOTIFIED_ID = column("id", UUID, "run_cancel_active_for_job", "run_release_many", discarded=("pg_notify",))
unread("id", queries=("job_lock_many",))


# ------------------------------------------------------------------------------------------ jobs


_job_params = struct_params(JobValues)


async def job_insert(conn: AsyncConn, values: JobValues) -> Job | None:
    """Create a job; None when its name is taken in its namespace."""
    return await fetch_one(conn, _JOB, "job_insert", _job_params(values))


async def job_get(conn: AsyncConn, *, namespace: str, job_id: UUID) -> Job | None:
    """Return the job, or None when it does not exist in this namespace."""
    return await fetch_one(conn, _JOB, "job_get", {"id": job_id, "namespace": namespace})


async def job_lock(conn: AsyncConn, *, namespace: str, job_id: UUID) -> Job | None:
    """Lock and return the job inside the caller's transaction."""
    return await fetch_one(conn, _JOB, "job_lock", {"id": job_id, "namespace": namespace})


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


async def job_update(conn: AsyncConn, values: JobValues) -> Job | None:
    """Overwrite the settable columns of job ``values.id`` and bump its version; None when it is gone.

    The job is looked for in ``values.namespace`` only.
    """
    return await fetch_one(conn, _JOB, "job_update", _job_params(values))


async def job_delete(conn: AsyncConn, *, namespace: str, job_id: UUID) -> bool:
    """Delete the job; False when it did not exist in this namespace."""
    return await fetch_one(conn, _ID, "job_delete", {"id": job_id, "namespace": namespace}) is not None


async def run_cancel_active_for_job(conn: AsyncConn, *, job_id: UUID, reason: str) -> list[UUID]:
    """Cancel the job's pending and running runs (caller holds the job's lock); return their ids."""
    params = {"job_id": job_id, "reason": reason}
    return await fetch_all(conn, _NOTIFIED_ID, "run_cancel_active_for_job", params)


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
    db_now: datetime,
) -> _Claimed:
    # Runs once per fire: the builder takes the columns as they come, with no lookup per row.
    unreadable = None
    try:
        decoded: Action = _action_decoder.decode(action)
    except msgspec.MsgspecError as exc:
        # Written by hand or by a newer version (a field this runner does not know): the claim
        # stops this job and fires the rest of the batch.
        decoded, unreadable = _STAND_IN, str(exc)
    due = DueJob(
        id=id,
        namespace=namespace,
        name=name,
        timing=Timing(schedule, timezone, anchor_at, start_at, end_at),
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
    conn: AsyncConn, *, limit: int, now: datetime | None = None
) -> tuple[list[DueJob], datetime | None]:
    """Lock up to ``limit`` due jobs (caller's transaction); return them and the claim's now.

    Due means at ``now``, the database's clock unless a test passes one.
    """
    claimed = await fetch_all(conn, _DUE, "job_claim_due", {"limit": limit, "now": now})
    if not claimed:
        return [], None
    return [row.job for row in claimed], claimed[0].db_now


class Move(msgspec.Struct, kw_only=True, frozen=True):
    """How a batch of recorded runs moves a job on: to its next slot (a claim), or not (a retry)."""

    job_id: UUID
    moves: bool
    next_run_at: datetime | None = None


async def job_lock_many(conn: AsyncConn, job_ids: Sequence[UUID]) -> None:
    """Lock jobs in id order (caller's transaction) before touching their runs."""
    await execute(conn, "job_lock_many", {"ids": sorted(set(job_ids))})


_BACKLOG = column("backlog", int, "job_due_backlog")


async def job_due_backlog(conn: AsyncConn, *, now: datetime | None = None) -> int:
    """How many jobs are due and not yet claimed, capped at a million.

    Due means at ``now``, the database's clock unless a test passes one.
    """
    return await fetch_one(conn, _BACKLOG, "job_due_backlog", {"now": now}) or 0


class NextDue(msgspec.Struct, frozen=True):
    """Seconds until the earliest slot and the earliest pending run (negative when overdue)."""

    slot_in_s: float | None
    pending_in_s: float | None


def _next_due(slot_in_s: Decimal | None, pending_in_s: Decimal | None) -> NextDue:
    return NextDue(
        None if slot_in_s is None else float(slot_in_s), None if pending_in_s is None else float(pending_in_s)
    )


_NEXT_DUE = built(_next_due, "job_next_due")


async def job_next_due(conn: AsyncConn) -> NextDue:
    """How long the runner may sleep, by the database clock."""
    return await fetch_one(conn, _NEXT_DUE, "job_next_due") or NextDue(None, None)


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


_INSERTED = struct(InsertedRun, "run_record_many")


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
    return await fetch_all(
        conn,
        _INSERTED,
        "run_record_many",
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


class FencedOutcome(msgspec.Struct, kw_only=True, frozen=True):
    """An attempt's outcome addressed to its run, under the lease the attempt was started with."""

    run_id: UUID
    job_id: UUID
    scheduled_for: datetime
    lease_token: UUID | None
    """None for the rescuer: accepted only if the run's lease has expired."""
    outcome: Outcome


def storable_text(value: str | None) -> str | None:
    """Text PostgreSQL accepts whatever a target sent: NUL dropped, lone surrogates replaced (U+FFFD).

    A single unstorable character would otherwise fail the whole statement, and with it every other
    outcome of the batch (SPEC 3.2: any answer a target sends is recorded).
    """
    if value is None or (value.isascii() and "\x00" not in value):
        return value
    return _SURROGATE.sub("\ufffd", value.replace("\x00", ""))


async def run_complete_many(
    conn: AsyncConn, outcomes: Sequence[FencedOutcome], *, now: datetime | None = None
) -> set[UUID]:
    """Write outcomes under their fencing tokens (caller's transaction, jobs locked first).

    Returns the ids whose outcome was accepted; the others had lost their lease. An outcome without
    a token (the rescuer's) is accepted only once the lease has expired at ``now`` (the database's
    clock unless given). Output and error texts are made storable first (`storable_text`).
    """
    if not outcomes:
        return set()
    accepted = await fetch_all(
        conn,
        _ID,
        "run_complete_many",
        {
            "ids": [o.run_id for o in outcomes],
            "scheduled_fors": [o.scheduled_for for o in outcomes],
            "lease_tokens": [o.lease_token for o in outcomes],
            "statuses": [o.outcome.status.value for o in outcomes],
            "durations_ms": [o.outcome.duration_ms for o in outcomes],
            "http_statuses": [o.outcome.http_status for o in outcomes],
            "outputs": [storable_text(o.outcome.output) for o in outcomes],
            "errors": [storable_text(o.outcome.error) for o in outcomes],
            "now": now,
        },
    )
    return set(accepted)


# ------------------------------------------------------------------------------------------ runs


def _slot_bounds(run_id: UUID) -> tuple[datetime, datetime] | None:
    slot = uuid7_time(run_id)
    if slot is None or slot > datetime.max.replace(tzinfo=UTC) - timedelta(milliseconds=1):
        return None
    return slot, slot + timedelta(milliseconds=1)


class RunState(msgspec.Struct, frozen=True):
    """A run's id and status."""

    id: UUID
    status: RunStatus


_RUN_STATE = struct(RunState, "run_status_many")


async def run_status_many(conn: AsyncConn, runs: Sequence[tuple[UUID, datetime]]) -> dict[UUID, RunStatus]:
    """The status of each of ``runs`` (id, slot) that is recorded; runs not recorded are left out."""
    keys = {"ids": [i for i, _ in runs], "slots": [s for _, s in runs]}
    return {row.id: row.status for row in await fetch_all(conn, _RUN_STATE, "run_status_many", keys)}


async def run_get(conn: AsyncConn, *, namespace: str, run_id: UUID) -> Run | None:
    """Return the run, or None when it does not exist in this namespace."""
    bounds = _slot_bounds(run_id)
    if bounds is None:
        return None
    slot_from, slot_to = bounds
    return await fetch_one(
        conn,
        _RUN,
        "run_get",
        {"id": run_id, "slot_from": slot_from, "slot_to": slot_to, "namespace": namespace},
    )


# Past now, for clocks that disagree: a manual run is slotted by the API's clock.
_FIRST_PAGE_SLACK = timedelta(hours=1)


async def run_list_for_job(
    conn: AsyncConn,
    *,
    job_id: UUID,
    before: tuple[datetime, int] | None,
    limit: int,
    now: datetime,
    status: RunStatus | None = None,
) -> list[Run]:
    """Return one page of a job's history, newest slot first, before the (slot, attempt) cursor.

    The first page starts just past ``now``: runs exist only for slots that came due (and manual
    runs, slotted at their trigger), so the partitions made ahead for the coming week are pruned.
    """
    if before is None:
        before = (now + _FIRST_PAGE_SLACK, 2**31 - 1)
    before_slot, before_attempt = before
    params = {
        "job_id": job_id,
        "before_slot": before_slot,
        "before_attempt": before_attempt,
        "status": status.value if status is not None else None,
        "limit": limit,
    }
    return await fetch_all(conn, _RUN, "run_list_for_job", params)


# --------------------------------------------------------------------------------------- tenants


class ApiKey(msgspec.Struct, kw_only=True):
    """An API key as listed (never the key itself)."""

    id: UUID
    namespace: str
    prefix: str
    description: str
    created_at: datetime
    revoked_at: datetime | None


_API_KEY = struct(ApiKey, "api_key_insert", "api_key_list", "api_key_revoke")
_NAMESPACE = column("namespace", str, "api_key_lookup")


async def namespace_ensure(conn: AsyncConn, *, name: str) -> None:
    """Create the namespace if it does not exist."""
    await execute(conn, "namespace_ensure", {"name": name})


async def api_key_insert(
    conn: AsyncConn, *, key_id: UUID, namespace: str, prefix: str, key_hash: bytes, description: str
) -> ApiKey:
    """Store a new key's hash."""
    params = {
        "id": key_id,
        "namespace": namespace,
        "prefix": prefix,
        "key_hash": key_hash,
        "description": description,
    }
    inserted = await fetch_one(conn, _API_KEY, "api_key_insert", params)
    if inserted is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
        raise RuntimeError("api key insert returned nothing")
    return inserted


async def api_key_lookup(conn: AsyncConn, *, key_hash: bytes) -> str | None:
    """Return the namespace of a live key with this hash."""
    return await fetch_one(conn, _NAMESPACE, "api_key_lookup", {"key_hash": key_hash})


async def api_key_list(conn: AsyncConn, *, namespace: str | None) -> list[ApiKey]:
    """Return keys, newest first."""
    return await fetch_all(conn, _API_KEY, "api_key_list", {"namespace": namespace})


async def api_key_revoke(conn: AsyncConn, *, key: str) -> ApiKey | None:
    """Revoke a key by id or prefix; None when no live key matches."""
    return await fetch_one(conn, _API_KEY, "api_key_revoke", {"key": key})


# ---------------------------------------------------------------------------- runs by requests


async def run_insert_one(conn: AsyncConn, run: NewRun) -> Run | None:
    """Record a run made by a request; None if its (job, slot, attempt) already exists."""
    params = {
        "id": run.id,
        "job_id": run.job_id,
        "scheduled_for": run.scheduled_for,
        "trigger": run.trigger.value,
        "attempt": run.attempt,
        "status": run.status.value,
        "available_in_s": run.available_in_s,
        "error": run.error,
    }
    return await fetch_one(conn, _RUN, "run_insert_one", params)


async def run_cancel(conn: AsyncConn, *, run_id: UUID, scheduled_for: datetime, reason: str) -> Run | None:
    """Cancel one unfinished run (caller holds its job's lock); None if it had already ended."""
    params = {"id": run_id, "scheduled_for": scheduled_for, "reason": reason}
    return await fetch_one(conn, _RUN, "run_cancel", params)


_LATEST_ATTEMPT = column("latest_attempt", int, "run_latest_attempt")
_PROMOTED = column("promoted", int, "run_promote_queued", discarded=("pg_notify",))
_QUEUED = column("queued", bool, "run_has_queued")


async def run_latest_attempt(conn: AsyncConn, *, job_id: UUID, scheduled_for: datetime) -> int:
    """Return the newest attempt number recorded for a slot (0 when none)."""
    params = {"job_id": job_id, "scheduled_for": scheduled_for}
    return await fetch_one(conn, _LATEST_ATTEMPT, "run_latest_attempt", params) or 0


async def run_promote_queued(conn: AsyncConn, *, job_ids: Sequence[UUID]) -> int:
    """Make the queued runs of these jobs available now; return how many."""
    if not job_ids:
        return 0
    return await fetch_one(conn, _PROMOTED, "run_promote_queued", {"job_ids": list(job_ids)}) or 0


async def run_has_queued(conn: AsyncConn, *, job_id: UUID, overlap: OverlapPolicy, active_runs: int) -> bool:
    """Whether the job has a run waiting behind its running one (overlap `queue` keeps one at most).

    Only a `queue` job with unfinished runs can have one, so for any other the database is not asked.
    """
    if overlap is not OverlapPolicy.QUEUE or active_runs == 0:
        return False
    queued = await fetch_one(conn, _QUEUED, "run_has_queued", {"job_id": job_id})
    return bool(queued)


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


_CLAIMED = struct(ClaimedRun, "run_claim_pending")


async def run_claim_pending(
    conn: AsyncConn, *, limit: int, runner: str, lease_s: float, now: datetime | None = None
) -> list[ClaimedRun]:
    """Start up to ``limit`` pending runs whose time has come at ``now`` (the database's unless given)."""
    params = {"limit": limit, "runner": runner, "lease_s": lease_s, "now": now}
    return await fetch_all(conn, _CLAIMED, "run_claim_pending", params)


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
    params = _lease_params(leases) | {"lease_s": lease_s, "now": now}
    return set(await fetch_all(conn, _ID, "run_heartbeat_many", params))


async def run_release_many(conn: AsyncConn, leases: Sequence[Lease]) -> int:
    """Hand unfinished runs back as pending, available at once; return how many."""
    if not leases:
        return 0
    return len(await fetch_all(conn, _NOTIFIED_ID, "run_release_many", _lease_params(leases)))


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


_EXPIRED = struct(ExpiredRun, "run_find_expired")


async def run_find_expired(conn: AsyncConn, *, limit: int, now: datetime | None = None) -> list[ExpiredRun]:
    """Return running runs whose lease has expired, oldest expiry first.

    Expired means at ``now``, the database's clock unless a test passes one.
    """
    return await fetch_all(conn, _EXPIRED, "run_find_expired", {"limit": limit, "now": now})


# --------------------------------------------------------------------------------- the service


_WRITABLE = column("writable", bool, "health_check")


async def health_check(conn: AsyncConn) -> bool:
    """Whether the database answers as a writable primary (False: a standby, or read-only)."""
    writable = await fetch_one(conn, _WRITABLE, "health_check")
    return writable is True


async def listen(conn: AsyncConn) -> None:
    """Subscribe a runner's listening connection to the wake, cancel and secrets channels."""
    await execute(conn, "listen_wake")
    await execute(conn, "listen_cancel")
    await execute(conn, "listen_secrets")


class PartitionUpkeep(msgspec.Struct, kw_only=True, frozen=True):
    """What one round of partition upkeep did."""

    locked: bool
    created: int = 0
    dropped: int = 0


_LOCKED = column("locked", bool, "maintenance_try_lock")
_CREATED = column("created", int, "run_partitions_ensure")
_DROPPED = column("dropped", int, "run_partitions_drop_expired")
_SECRET = column("secret", str, "signing_secrets_current")
unread("pg_notify", queries=("signing_secrets_changed",))


async def run_partitions_upkeep(
    conn: AsyncConn, *, days_ahead: int, retention_days: int, today: date | None = None
) -> PartitionUpkeep:
    """Create partitions ahead and drop expired ones, if no other runner is doing it right now.

    Days count from ``today``, the database's date unless a test passes one.
    """
    async with conn.transaction():
        if not await fetch_one(conn, _LOCKED, "maintenance_try_lock"):
            return PartitionUpkeep(locked=False)
        await execute(conn, "lock_timeout_short")
        created = await fetch_one(
            conn, _CREATED, "run_partitions_ensure", {"days_ahead": days_ahead, "today": today}
        )
        dropped = await fetch_one(
            conn, _DROPPED, "run_partitions_drop_expired", {"retention_days": retention_days, "today": today}
        )
    return PartitionUpkeep(locked=True, created=created or 0, dropped=dropped or 0)


async def signing_secrets_current(conn: AsyncConn, *, namespace: str) -> list[str]:
    """The namespace's unexpired signing secrets, newest first."""
    return await fetch_all(conn, _SECRET, "signing_secrets_current", {"namespace": namespace})


async def signing_secret_create(
    conn: AsyncConn, *, namespace: str, secret: str, grace_s: float | None, secret_id: UUID
) -> None:
    """Make ``secret`` the namespace's current one (caller's transaction), stored as ``secret_id``.

    With ``grace_s`` this is a rotation: the old current secret stays valid that long. Without it, the
    secret is only added when the namespace has no current one. The caller names the row (a UUIDv7
    of its clock).
    """
    await execute(conn, "namespace_ensure", {"name": namespace})
    if grace_s is not None:
        await execute(conn, "signing_secret_expire_current", {"namespace": namespace, "grace_s": grace_s})
    params = {"id": secret_id, "namespace": namespace, "secret": secret}
    await execute(conn, "signing_secret_insert", params)
    await execute(conn, "signing_secrets_changed", {"namespace": namespace})


_JOBS = column("jobs", int, "namespace_usage_add")


async def namespace_usage_add(conn: AsyncConn, *, namespace: str, delta: int) -> int:
    """Count jobs into or out of a namespace (caller's transaction); return its new job count."""
    return await fetch_one(conn, _JOBS, "namespace_usage_add", {"namespace": namespace, "delta": delta}) or 0


class SigningSecret(msgspec.Struct, kw_only=True, frozen=True):
    """A namespace's signing secret that is still valid; ``expires_at`` is None for the current one."""

    secret: str
    created_at: datetime
    expires_at: datetime | None


_SIGNING_SECRET = struct(SigningSecret, "signing_secrets_valid")


async def signing_secrets_valid(conn: AsyncConn, *, namespace: str) -> list[SigningSecret]:
    """The namespace's secrets that still verify, newest (the current one) first."""
    return await fetch_all(conn, _SIGNING_SECRET, "signing_secrets_valid", {"namespace": namespace})


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
    if job_id is None:
        return await fetch_all(conn, _RUN, "run_list_namespace", params)
    return await fetch_all(conn, _RUN, "run_list_namespace_job", params)


# ------------------------------------------------------------------------------- the web console


_CONSOLE_SECRET = column("secret", bytes, "console_secret_ensure")


async def console_secret(conn: AsyncConn, *, candidate: bytes) -> bytes:
    """The database's console signing secret, storing ``candidate`` when there is none yet."""
    found = await fetch_one(conn, _CONSOLE_SECRET, "console_secret_ensure", {"secret": candidate})
    if found is None:  # pragma: no cover - the insert or the existing row always answers
        raise RuntimeError("console secret neither made nor found")
    return found


async def job_pause_note_set(conn: AsyncConn, *, namespace: str, job_id: UUID, note: str | None) -> None:
    """Set or clear (None) the note on a job (caller holds its lock)."""
    await execute(conn, "job_pause_note_set", {"id": job_id, "namespace": namespace, "note": note})


class RecentOutcomes(msgspec.Struct, kw_only=True, frozen=True):
    """A job's last runs as the console's jobs page shows them."""

    outcomes: list[RunStatus]
    """Statuses of the last 50 runs, oldest first."""
    p95_lateness_s: float | None
    """95th percentile of started_at - scheduled_for over the scheduled ones among them."""


def _recent_outcomes(
    id: UUID,  # noqa: A002 - named after its column
    outcomes: list[str],
    p95_lateness_s: float | None,
) -> tuple[UUID, RecentOutcomes]:
    return id, RecentOutcomes(
        outcomes=[RUN_STATUS[status] for status in outcomes],
        p95_lateness_s=None if p95_lateness_s is None else float(p95_lateness_s),
    )


_RECENT_OUTCOMES = built(_recent_outcomes, "job_recent_outcomes")


async def job_recent_outcomes(
    conn: AsyncConn, *, job_ids: Sequence[UUID], now: datetime
) -> dict[UUID, RecentOutcomes]:
    """The outcome strip and p95 lateness of each job (ids the caller already scoped)."""
    if not job_ids:
        return {}
    params = {"ids": list(job_ids), "before_slot": now + _FIRST_PAGE_SLACK}
    return dict(await fetch_all(conn, _RECENT_OUTCOMES, "job_recent_outcomes", params))


async def run_attempts(conn: AsyncConn, *, job_id: UUID, scheduled_for: datetime) -> list[Run]:
    """Every attempt of one slot, first to last."""
    return await fetch_all(conn, _RUN, "run_attempts", {"job_id": job_id, "scheduled_for": scheduled_for})


def _job_name(id: UUID, name: str) -> tuple[UUID, str]:  # noqa: A002 - named after its column
    return id, name


_JOB_NAME = built(_job_name, "job_names")


async def job_names(conn: AsyncConn, *, namespace: str, job_ids: Sequence[UUID]) -> dict[UUID, str]:
    """The names of these jobs of the namespace, by id."""
    if not job_ids:
        return {}
    params = {"ids": list(set(job_ids)), "namespace": namespace}
    return dict(await fetch_all(conn, _JOB_NAME, "job_names", params))


# ------------------------------------------------------------------------------------ migrations
# Blocking: `scheduler migrate` runs before any event loop, on a connection of its own.

unread("pg_advisory_xact_lock", queries=("migration_lock",))
_VERSION = column("version", int, "migration_applied_versions")


def migration_lock(conn: SyncConn) -> None:
    """Wait for the migration lock, held until the caller's transaction ends."""
    conn.execute(q("migration_lock"))


def migration_table_create(conn: SyncConn) -> None:
    """Create the ledger of applied migrations if it is not there yet."""
    conn.execute(q("migration_table_create"))


def migration_applied_versions(conn: SyncConn) -> set[int]:
    """The versions of the migrations applied so far."""
    with conn.cursor(row_factory=_VERSION.factory("migration_applied_versions")) as cur:
        cur.execute(q("migration_applied_versions"))
        return set(cur.fetchall())


def migration_record(conn: SyncConn, *, version: int, name: str) -> None:
    """Note a migration as applied (in the migration's own transaction)."""
    conn.execute(q("migration_record"), {"version": version, "name": name})
