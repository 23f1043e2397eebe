"""The /runs resource: read one run, cancel it, or retry it as a new attempt."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from scheduler.api.jobs import decode_cursor, encode_cursor
from scheduler.api.problems import ProblemError, invalid, problem_responses
from scheduler.api.schemas import RunOut, RunPage
from scheduler.api.state import conn_for, namespace_of
from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain.models import Job, OverlapPolicy, Run, RunStatus, RunTrigger
from scheduler.domain.retry import RETRYABLE_BY_REQUEST
from scheduler.ids import uuid7


def run_not_found(run_id: UUID) -> ProblemError:
    """The 404 for a run that does not exist in the caller's namespace."""
    return ProblemError(404, f"run {run_id} not found", kind="not-found")


class RunController(Controller):
    """Runs of the caller's jobs."""

    path = "/runs"
    tags = ["runs"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/", operation_id="listRuns", responses=problem_responses(400, 401, 422, 429))
    async def list_runs(
        self,
        request: Request[Any, Any, Any],
        *,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: FromQuery[str | None] = None,
        status: FromQuery[RunStatus | None] = None,
        trigger: FromQuery[RunTrigger | None] = None,
        job_id: FromQuery[UUID | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> RunPage:
        """The namespace's runs across its jobs, newest first; follow next_cursor for older ones.

        `since` (inclusive) and `until` (exclusive) bound the slot (`scheduled_for`); runs of one slot
        keep to the order of their ids.
        """
        for field, instant in (("since", since), ("until", until)):
            if instant is not None and instant.utcoffset() is None:
                raise invalid(
                    field, "give an RFC 3339 time with an offset, e.g. 2026-11-23T08:00:00Z", status=400
                )
        before_id = None
        if cursor is not None:
            try:
                before_id = UUID(decode_cursor(cursor))
            except ValueError:
                raise invalid("cursor", "is not a cursor this API returned", status=400) from None
        async with conn_for(request) as conn:
            runs = await store.run_list_namespace(
                conn,
                namespace=namespace_of(request),
                now=datetime.now(UTC),
                limit=limit,
                before_id=before_id,
                job_id=job_id,
                status=status,
                trigger=trigger,
                since=since,
                until=until,
            )
        next_cursor = encode_cursor(str(runs[-1].id)) if len(runs) == limit else None
        return RunPage(items=[RunOut.of(run) for run in runs], next_cursor=next_cursor)

    @get("/{run_id:uuid}", responses=problem_responses(401, 404, 429))
    async def get_run(self, request: Request[Any, Any, Any], run_id: FromPath[UUID]) -> RunOut:
        """Return one run."""
        async with conn_for(request) as conn:
            run = await store.run_get(conn, namespace=namespace_of(request), run_id=run_id)
        if run is None:
            raise run_not_found(run_id)
        return RunOut.of(run)

    @post(
        "/{run_id:uuid}/cancel",
        status_code=HTTP_202_ACCEPTED,
        responses=problem_responses(401, 404, 409, 429),
    )
    async def cancel_run(self, request: Request[Any, Any, Any], run_id: FromPath[UUID]) -> RunOut:
        """Cancel a pending or running run; its runner stops the call within a second. 409 once finished."""
        async with conn_for(request) as conn, conn.transaction():
            cancelled = await cancel(conn, namespace=namespace_of(request), run_id=run_id)
        return RunOut.of(cancelled)

    @post(
        "/{run_id:uuid}/retry", status_code=HTTP_202_ACCEPTED, responses=problem_responses(401, 404, 409, 429)
    )
    async def retry_run(self, request: Request[Any, Any, Any], run_id: FromPath[UUID]) -> RunOut:
        """Start a new attempt of a failed, timed-out, cancelled or lost run (its newest attempt)."""
        async with conn_for(request) as conn, conn.transaction():
            created = await retry(conn, namespace=namespace_of(request), run_id=run_id)
        return RunOut.of(created)


async def _insert_retry(conn: AsyncConn, run: Run, attempt: int) -> Run:
    created = await store.run_insert_one(
        conn,
        store.NewRun(
            id=uuid7(run.scheduled_for),
            job_id=run.job_id,
            scheduled_for=run.scheduled_for,
            trigger=RunTrigger.RETRY,
            attempt=attempt,
            status=RunStatus.PENDING,
            available_in_s=0.0,
        ),
    )
    if created is None:
        raise ProblemError(409, f"attempt {attempt} of this slot exists already", kind="conflict")
    return created


# ------------------------------------------------------------ domain rules shared with the console
# The API's handlers and the web console (scheduler.ui) act on runs through these, so both follow
# the same rules. Each runs in the caller's transaction and raises the API's problems.


async def _run_with_locked_job(conn: AsyncConn, *, namespace: str, run_id: UUID) -> tuple[Run, Job]:
    """The run and its job, the job's row locked (a run changes its job's counters); 404 for either gone."""
    run = await store.run_get(conn, namespace=namespace, run_id=run_id)
    if run is None:
        raise run_not_found(run_id)
    job = await store.job_lock(conn, namespace=namespace, job_id=run.job_id)
    if job is None:
        raise run_not_found(run_id)
    return run, job


async def cancel(conn: AsyncConn, *, namespace: str, run_id: UUID) -> Run:
    """Cancel a pending or running run (409 once finished); its runner is told at commit."""
    run, job = await _run_with_locked_job(conn, namespace=namespace, run_id=run_id)
    cancelled = await store.run_cancel(
        conn, run_id=run.id, scheduled_for=run.scheduled_for, reason="cancelled by request"
    )
    if cancelled is None:
        current = await store.run_get(conn, namespace=namespace, run_id=run_id)
        status = current.status if current else run.status
        raise ProblemError(409, f"run {run_id} already finished ({status})", kind="conflict")
    if job.overlap is OverlapPolicy.QUEUE and run.status is RunStatus.RUNNING:
        await store.run_promote_queued(conn, job_ids=[job.id])
    return cancelled


async def retry(conn: AsyncConn, *, namespace: str, run_id: UUID) -> Run:
    """Record the next attempt of a slot whose newest attempt failed, timed out, was cancelled or lost."""
    # The job's lock orders this attempt against a runner recording one, and its count of
    # unfinished runs that the insert raises.
    run, _ = await _run_with_locked_job(conn, namespace=namespace, run_id=run_id)
    if run.status not in RETRYABLE_BY_REQUEST:
        raise ProblemError(
            409,
            f"run {run_id} is {run.status}; only failed, timed_out, cancelled or lost runs can be retried",
            kind="conflict",
        )
    latest = await store.run_latest_attempt(conn, job_id=run.job_id, scheduled_for=run.scheduled_for)
    if latest != run.attempt:
        raise ProblemError(
            409, f"attempt {latest} of this slot exists already; retry that one", kind="conflict"
        )
    return await _insert_retry(conn, run, latest + 1)
