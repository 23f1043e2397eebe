"""The queries of `sql/queries/runs.sql`: runs recorded, started and leased, ended, and read.

Every function here that moves runs into or out of pending and running changes their jobs'
``active_runs`` in the same statement, by the rows it moved (see the head of runs.sql).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import msgspec

from scheduler.db.connections import AsyncConn
from scheduler.db.rows import column, fetch_all, fetch_one, struct
from scheduler.domain.models import (
    STORED_AS_JSON,
    Action,
    Outcome,
    OverlapPolicy,
    RetryPolicy,
    Run,
    RunStatus,
    RunTrigger,
    SentRequest,
)
from scheduler.ids import uuid7_time

_json_encoder = msgspec.json.Encoder()

# A str can hold lone surrogates (decoded with "surrogateescape", cut mid-pair); UTF-8 cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")

_RUN = struct(
    Run,
    "run_insert_one",
    "run_cancel",
    "run_get",
    "run_list_for_job",
    "run_attempts",
    "run_attempts_of_slots",
    "run_list_namespace",
    "run_list_namespace_job",
)
_ID = column("id", UUID, "run_heartbeat_many", "run_complete_many")
_NOTIFIED_ID = column("id", UUID, "run_release_many", "run_cancel_active_for_job", discarded=("pg_notify",))


# -------------------------------------------------------------------------------- recording runs


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


class Move(msgspec.Struct, kw_only=True, frozen=True):
    """How a batch of recorded runs moves a job on: to its next slot (a claim), or not (a retry)."""

    job_id: UUID
    moves: bool
    next_run_at: datetime | None = None


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
    the jobs' counts of unfinished runs follow the rows actually inserted (of jobs in ``moves`` or
    not).
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
            # The members themselves: a StrEnum is a str and is sent as its value, and on Python
            # 3.11 reading `.value` costs a descriptor call per run.
            "triggers": [r.trigger for r in runs],
            "attempts": [r.attempt for r in runs],
            "statuses": [r.status for r in runs],
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


# ---------------------------------------------------------------- starting runs and their leases


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
    namespace: str
    job_name: str


_EXPIRED = struct(ExpiredRun, "run_find_expired")


async def run_find_expired(conn: AsyncConn, *, limit: int, now: datetime | None = None) -> list[ExpiredRun]:
    """Return running runs whose lease has expired, oldest expiry first.

    Expired means at ``now``, the database's clock unless a test passes one.
    """
    return await fetch_all(conn, _EXPIRED, "run_find_expired", {"limit": limit, "now": now})


# ----------------------------------------------------------------------------------- ending runs


class FencedOutcome(msgspec.Struct, kw_only=True, frozen=True):
    """An attempt's outcome addressed to its run, under the lease the attempt was started with."""

    run_id: UUID
    job_id: UUID
    scheduled_for: datetime
    lease_token: UUID | None
    """None for the rescuer: accepted only if the run's lease has expired."""
    outcome: Outcome
    start_delay_s: float = 0.0
    """How long after the row's started_at the call really began (a busy event loop, a slot
    claimed ahead): added to started_at, so it says when the call started."""


def storable_text(value: str | None) -> str | None:
    """Text PostgreSQL accepts whatever a target sent: NUL dropped, lone surrogates replaced (U+FFFD).

    A single unstorable character would otherwise fail the whole statement, and with it every other
    outcome of the batch (SPEC 3.2: any answer a target sends is recorded).
    """
    if value is None or (value.isascii() and "\x00" not in value):
        return value
    return _SURROGATE.sub("\ufffd", value.replace("\x00", ""))


def _json_or_none(value: object) -> str | None:
    """A value as JSON text for a jsonb[] parameter (the runner masked and capped it already)."""
    return None if value is None else _json_encoder.encode(value).decode()


async def run_complete_many(
    conn: AsyncConn,
    outcomes: Sequence[FencedOutcome],
    *,
    now: datetime | None = None,
    finals: Sequence[bool] | None = None,
) -> set[UUID]:
    """Write outcomes under their fencing tokens (caller's transaction, jobs locked first).

    Returns the ids whose outcome was accepted; the others had lost their lease. An outcome without
    a token (the rescuer's) is accepted only once the lease has expired at ``now`` (the database's
    clock unless given). Output and error texts are made storable first (`storable_text`).
    ``finals`` says, outcome by outcome, which end their slot (no retry follows; all of them when
    not given): a failed final attempt counts in the job's failed_slots, which notifications follow.
    """
    if not outcomes:
        return set()
    if finals is None:
        finals = [True] * len(outcomes)
    elif len(finals) != len(outcomes):
        raise ValueError("finals must say one thing per outcome")
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
            "start_delays_s": [o.start_delay_s for o in outcomes],
            "http_statuses": [o.outcome.http_status for o in outcomes],
            "outputs": [storable_text(o.outcome.output) for o in outcomes],
            "errors": [storable_text(o.outcome.error) for o in outcomes],
            "requests": [_json_or_none(o.outcome.request) for o in outcomes],
            "response_headers": [_json_or_none(o.outcome.response_headers) for o in outcomes],
            "finals": list(finals),
            "now": now,
        },
    )
    return set(accepted)


async def run_cancel(conn: AsyncConn, *, run_id: UUID, scheduled_for: datetime, reason: str) -> Run | None:
    """Cancel one unfinished run (caller holds its job's lock); None if it had already ended."""
    params = {"id": run_id, "scheduled_for": scheduled_for, "reason": reason}
    return await fetch_one(conn, _RUN, "run_cancel", params)


async def run_cancel_active_for_job(conn: AsyncConn, *, job_id: UUID, reason: str) -> list[UUID]:
    """Cancel the job's pending and running runs (caller holds the job's lock); return their ids."""
    params = {"job_id": job_id, "reason": reason}
    return await fetch_all(conn, _NOTIFIED_ID, "run_cancel_active_for_job", params)


# ----------------------------------------------------------------------- overlap queue and retries


_QUEUED = column("queued", bool, "run_has_queued")
_PROMOTED = column("promoted", int, "run_promote_queued", discarded=("pg_notify",))
_LATEST_ATTEMPT = column("latest_attempt", int, "run_latest_attempt")


async def run_has_queued(conn: AsyncConn, *, job_id: UUID) -> bool:
    """Whether the job has a pending run waiting (available_at NULL) for its running one to end."""
    queued = await fetch_one(conn, _QUEUED, "run_has_queued", {"job_id": job_id})
    return queued is True


async def run_promote_queued(conn: AsyncConn, *, job_ids: Sequence[UUID]) -> int:
    """Make the queued runs of these jobs available now; return how many."""
    if not job_ids:
        return 0
    return await fetch_one(conn, _PROMOTED, "run_promote_queued", {"job_ids": list(job_ids)}) or 0


async def run_latest_attempt(conn: AsyncConn, *, job_id: UUID, scheduled_for: datetime) -> int:
    """Return the newest attempt number recorded for a slot (0 when none)."""
    params = {"job_id": job_id, "scheduled_for": scheduled_for}
    return await fetch_one(conn, _LATEST_ATTEMPT, "run_latest_attempt", params) or 0


# ---------------------------------------------------------------------------------- reading runs


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
    slot_from, slot_to = bounds
    return await fetch_one(
        conn,
        _RUN,
        "run_get",
        {"id": run_id, "slot_from": slot_from, "slot_to": slot_to, "namespace": namespace},
    )


class RunState(msgspec.Struct, frozen=True):
    """A run's id and status."""

    id: UUID
    status: RunStatus


_RUN_STATE = struct(RunState, "run_status_many")


async def run_status_many(conn: AsyncConn, runs: Sequence[tuple[UUID, datetime]]) -> dict[UUID, RunStatus]:
    """The status of each of ``runs`` (id, slot) that is recorded; runs not recorded are left out."""
    keys = {"ids": [i for i, _ in runs], "slots": [s for _, s in runs]}
    return {row.id: row.status for row in await fetch_all(conn, _RUN_STATE, "run_status_many", keys)}


# Past now, for clocks that disagree: a manual run is slotted by the API's clock.
_FIRST_PAGE_SLACK = timedelta(hours=1)


async def run_list_for_job(
    conn: AsyncConn,
    *,
    job_id: UUID,
    before: tuple[datetime, int] | None,
    limit: int,
    now: datetime,
    statuses: Sequence[RunStatus] | None = None,
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
        "statuses": [status.value for status in statuses] if statuses else None,
        "limit": limit,
    }
    return await fetch_all(conn, _RUN, "run_list_for_job", params)


async def run_attempts(conn: AsyncConn, *, job_id: UUID, scheduled_for: datetime) -> list[Run]:
    """Every attempt of one slot, first to last."""
    return await fetch_all(conn, _RUN, "run_attempts", {"job_id": job_id, "scheduled_for": scheduled_for})


async def run_attempts_of_slots(conn: AsyncConn, slots: Sequence[tuple[UUID, datetime]]) -> list[Run]:
    """Every attempt of each (job, slot) given, ordered by job, slot, then attempt."""
    if not slots:
        return []
    params = {"job_ids": [job_id for job_id, _ in slots], "slots": [slot for _, slot in slots]}
    return await fetch_all(conn, _RUN, "run_attempts_of_slots", params)


class RunExchange(msgspec.Struct, kw_only=True, frozen=True):
    """What one HTTP attempt sent and what came back beyond its status and body (masked by the runner)."""

    request: Annotated[SentRequest | None, STORED_AS_JSON] = None
    response_headers: dict[str, str] | None = None


_EXCHANGE = struct(RunExchange, "run_exchange_get")


async def run_exchange_get(conn: AsyncConn, *, run_id: UUID, scheduled_for: datetime) -> RunExchange:
    """The request a run sent and its response's headers; empty for log actions, rescues and older runs."""
    params = {"id": run_id, "scheduled_for": scheduled_for}
    return await fetch_one(conn, _EXCHANGE, "run_exchange_get", params) or RunExchange()


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
    statuses: Sequence[RunStatus] | None = None,
    trigger: RunTrigger | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    labels: dict[str, str] | None = None,
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
        "statuses": [status.value for status in statuses] if statuses else None,
        "trigger": trigger.value if trigger is not None else None,
        "labels": _json_encoder.encode(labels or {}).decode(),
        "limit": limit,
    }
    if job_id is None:
        return await fetch_all(conn, _RUN, "run_list_namespace", params)
    return await fetch_all(conn, _RUN, "run_list_namespace_job", params)


class RecentOutcomes(msgspec.Struct, kw_only=True, frozen=True):
    """A job's last runs as the console's jobs page shows them."""

    outcomes: list[RunStatus]
    """Statuses of the last 50 runs, oldest first."""
    p95_lateness_s: float | None
    """95th percentile of started_at - scheduled_for over the scheduled ones among them."""
