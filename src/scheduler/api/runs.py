"""The /runs resource: read one run, cancel it, or retry it as a new attempt."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from scheduler.api.idempotent import guarded
from scheduler.api.params import INSTANT, STATUS_LIST, instant_of, label_filter, refuse_unknown_query
from scheduler.api.problems import problem_responses
from scheduler.api.schemas import RunOut, RunPage
from scheduler.db import store
from scheduler.domain.models import RunTrigger
from scheduler.operations import runs as run_ops
from scheduler.web.state import conn_for, namespace_of, now_of


class RunController(Controller):
    """Runs of the caller's jobs."""

    path = "/runs"
    tags = ["runs"]  # noqa: RUF012 - Litestar reads it as a class attribute
    before_request = staticmethod(refuse_unknown_query)

    @get("/", operation_id="listRuns", responses=problem_responses(400, 401, 422, 429))
    async def list_runs(
        self,
        request: Request[Any, Any, Any],
        *,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: FromQuery[str | None] = None,
        status: Annotated[str | None, QueryParameter(description=STATUS_LIST, max_length=200)] = None,
        trigger: FromQuery[RunTrigger | None] = None,
        job_id: FromQuery[UUID | None] = None,
        job_name: Annotated[str | None, QueryParameter(max_length=128)] = None,
        label: Annotated[str | None, QueryParameter(description="A job label, `key=value`.")] = None,
        since: Annotated[str | None, QueryParameter(description=INSTANT, max_length=64)] = None,
        until: Annotated[str | None, QueryParameter(description=INSTANT, max_length=64)] = None,
    ) -> RunPage:
        """The namespace's runs across its jobs, newest first; follow next_cursor for older ones.

        `since` (inclusive) and `until` (exclusive) bound the slot (`scheduled_for`); runs of one slot
        keep to the order of their ids. `status` takes a comma-separated list; `job_name` and
        `label` keep the runs of the job of that name, or of the jobs carrying that label.
        """
        statuses = run_ops.statuses_of(status)
        labels = label_filter(label)
        now = now_of(request)
        since_at, until_at = instant_of("since", since, now), instant_of("until", until, now)
        async with conn_for(request) as conn:
            runs, next_cursor = await run_ops.list_page(
                conn,
                namespace=namespace_of(request),
                cursor=cursor,
                limit=limit,
                now=now,
                job_id=job_id,
                job_name=job_name,
                statuses=statuses,
                trigger=trigger,
                since=since_at,
                until=until_at,
                labels=labels,
            )
            names = await run_ops.job_names(conn, namespace=namespace_of(request), runs=runs)
        return RunPage(items=RunOut.page(runs, names), next_cursor=next_cursor)

    @get("/{run_id:uuid}", responses=problem_responses(401, 404, 429))
    async def get_run(self, request: Request[Any, Any, Any], run_id: FromPath[UUID]) -> RunOut:
        """Return one run, with the request it sent and its response's headers (secrets masked)."""
        async with conn_for(request) as conn:
            run = await run_ops.get(conn, namespace=namespace_of(request), run_id=run_id)
            names = await run_ops.job_names(conn, namespace=namespace_of(request), runs=[run])
            sent = await store.run_exchange_get(conn, run_id=run.id, scheduled_for=run.scheduled_for)
        return RunOut.of(run, names.get(run.job_id), sent.request, sent.response_headers)

    @post(
        "/{run_id:uuid}/cancel",
        status_code=HTTP_202_ACCEPTED,
        responses=problem_responses(401, 404, 409, 429),
    )
    async def cancel_run(self, request: Request[Any, Any, Any], run_id: FromPath[UUID]) -> RunOut:
        """Cancel a pending or running run; its runner stops the call within a second. 409 once finished."""
        async with conn_for(request) as conn, conn.transaction():
            cancelled = await run_ops.cancel(conn, namespace=namespace_of(request), run_id=run_id)
        return RunOut.of(*cancelled)

    @post(
        "/{run_id:uuid}/retry", status_code=HTTP_202_ACCEPTED, responses=problem_responses(401, 404, 409, 429)
    )
    async def retry_run(self, request: Request[Any, Any, Any], run_id: FromPath[UUID]) -> Response[RunOut]:
        """Start a new attempt of a failed, timed-out, cancelled or lost run (its newest attempt).

        With an `Idempotency-Key`, a retry of this request answers the attempt the first one made.
        """
        async with conn_for(request) as conn, conn.transaction():

            async def write() -> Response[RunOut]:
                created = await run_ops.retry(conn, namespace=namespace_of(request), run_id=run_id)
                return Response(RunOut.of(*created), status_code=HTTP_202_ACCEPTED)

            return await guarded(request, conn, RunOut, write)
