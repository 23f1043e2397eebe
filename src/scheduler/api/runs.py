"""The /runs resource: read one run, cancel it, or retry it as a new attempt."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED

from scheduler import store
from scheduler.api.problems import ProblemError, problem_responses
from scheduler.api.schemas import RunOut
from scheduler.api.state import conn_for, namespace_of
from scheduler.db import AsyncConn
from scheduler.ids import uuid7
from scheduler.models import RETRYABLE_STATUSES, OverlapPolicy, Run, RunStatus, RunTrigger


def run_not_found(run_id: UUID) -> ProblemError:
    """The 404 for a run that does not exist in the caller's namespace."""
    return ProblemError(404, f"run {run_id} not found", kind="not-found")


class RunController(Controller):
    """Runs of the caller's jobs."""

    path = "/runs"
    tags = ["runs"]  # noqa: RUF012 - Litestar reads it as a class attribute

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
        namespace = namespace_of(request)
        async with conn_for(request) as conn, conn.transaction():
            run = await store.run_get(conn, namespace=namespace, run_id=run_id)
            if run is None:
                raise run_not_found(run_id)
            job = await store.job_lock(conn, namespace=namespace, job_id=run.job_id)
            if job is None:
                raise run_not_found(run_id)
            cancelled = await store.run_cancel(
                conn, run_id=run.id, scheduled_for=run.scheduled_for, reason="cancelled by request"
            )
            if cancelled is None:
                current = await store.run_get(conn, namespace=namespace, run_id=run_id)
                status = current.status if current else run.status
                raise ProblemError(409, f"run {run_id} already finished ({status})", kind="conflict")
            await store.job_add_active(conn, job_id=job.id, delta=-1)
            if job.overlap is OverlapPolicy.QUEUE and run.status is RunStatus.RUNNING:
                await store.run_promote_queued(conn, job_ids=[job.id])
        return RunOut.of(cancelled)

    @post(
        "/{run_id:uuid}/retry", status_code=HTTP_202_ACCEPTED, responses=problem_responses(401, 404, 409, 429)
    )
    async def retry_run(self, request: Request[Any, Any, Any], run_id: FromPath[UUID]) -> RunOut:
        """Start a new attempt of a failed, timed-out, cancelled or lost run (its newest attempt)."""
        namespace = namespace_of(request)
        async with conn_for(request) as conn, conn.transaction():
            run = await store.run_get(conn, namespace=namespace, run_id=run_id)
            if run is None:
                raise run_not_found(run_id)
            job = await store.job_lock(conn, namespace=namespace, job_id=run.job_id)
            if job is None:
                raise run_not_found(run_id)
            if run.status not in RETRYABLE_STATUSES:
                raise ProblemError(
                    409,
                    f"run {run_id} is {run.status}; "
                    "only failed, timed_out, cancelled or lost runs can be retried",
                    kind="conflict",
                )
            latest = await store.run_latest_attempt(conn, job_id=run.job_id, scheduled_for=run.scheduled_for)
            if latest != run.attempt:
                raise ProblemError(
                    409, f"attempt {latest} of this slot exists already; retry that one", kind="conflict"
                )
            created = await _insert_retry(conn, run, latest + 1)
            await store.job_add_active(conn, job_id=job.id, delta=1)
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
