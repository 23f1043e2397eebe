"""The /jobs resource: create, read, list, update, delete, pause, resume, next runs, history.

Each handler reads the request, runs one operation of `scheduler.operations.jobs` in a
transaction, and renders its answer; the operation's refusals become problems in `problems.py`.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from scheduler.api.encoded import EncodedResponse
from scheduler.api.idempotent import guarded
from scheduler.api.params import STATUS_LIST, label_filter, refuse_unknown_query
from scheduler.api.problems import problem_responses
from scheduler.api.schemas import (
    MAX_APPLY_BODY,
    Applied,
    ApplyIn,
    ApplyOut,
    JobCreate,
    JobOut,
    JobPage,
    NextRuns,
    RunOut,
    RunPage,
)
from scheduler.domain.fields import JobPatch
from scheduler.domain.models import Job
from scheduler.operations import declare, jobs
from scheduler.operations import runs as run_ops
from scheduler.operations.idempotency import KEY_HEADER
from scheduler.web.state import conn_for, namespace_of, now_of, settings_of


def job_response(job: Job, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[JobOut]:
    """Render a job with its ETag."""
    return EncodedResponse(
        JobOut.of(job), status_code=status_code, headers={"ETag": jobs.etag(job)} | (headers or {})
    )


def changes_of(patch: JobPatch) -> dict[str, Any]:
    """The fields a patch sets (`null` included), leaving out those it does not name."""
    return {
        name: value
        for name in JobPatch.__struct_fields__
        if (value := getattr(patch, name)) is not msgspec.UNSET
    }


class JobController(Controller):
    """Jobs of the caller's namespace."""

    path = "/jobs"
    tags = ["jobs"]  # noqa: RUF012 - Litestar reads it as a class attribute
    before_request = staticmethod(refuse_unknown_query)

    @post("/", status_code=HTTP_201_CREATED, responses=problem_responses(400, 401, 409, 413, 422, 429))
    async def create_job(
        self, request: Request[Any, Any, Any], data: JSONBody[JobCreate]
    ) -> Response[JobOut]:
        """Create a job; its first fire time is computed now and stored as next_run_at.

        With an `Idempotency-Key`, a retry of this request answers what the first one answered.
        """
        async with conn_for(request) as conn:

            async def write() -> Response[JobOut]:
                job = await jobs.create(
                    conn,
                    namespace=namespace_of(request),
                    spec=data,
                    now=now_of(request),
                    quota=settings_of(request).namespace_job_quota,
                )
                return job_response(job, HTTP_201_CREATED, {"Location": f"/jobs/{job.id}"})

            if request.headers.get(KEY_HEADER) is None:
                # A create writes the job and its count in one statement (jobs.create): in
                # autocommit that is one round trip, where BEGIN and COMMIT would add two.
                return await write()
            async with conn.transaction():
                return await guarded(request, conn, JobOut, write)

    @get("/", responses=problem_responses(400, 401, 422, 429))
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        *,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: FromQuery[str | None] = None,
        name_prefix: Annotated[str | None, QueryParameter(max_length=128)] = None,
        paused: FromQuery[bool | None] = None,
        label: FromQuery[str | None] = None,
        failing: FromQuery[bool | None] = None,
    ) -> Response[JobPage]:
        """List jobs in name order; follow next_cursor for the next page.

        Filter labels as `key=value`; `failing=true` keeps the jobs whose newest finished run did not
        succeed.
        """
        async with conn_for(request) as conn:
            found, next_cursor = await jobs.list_page(
                conn,
                namespace=namespace_of(request),
                cursor=cursor,
                limit=limit,
                name_prefix=name_prefix,
                paused=paused,
                labels=label_filter(label),
                failing=bool(failing),
            )
        return EncodedResponse(JobPage(items=[JobOut.of(job) for job in found], next_cursor=next_cursor))

    @put("/by-name/{name:str}", responses=problem_responses(400, 401, 409, 412, 413, 422, 429))
    async def put_job_by_name(
        self, request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[JobCreate]
    ) -> Response[JobOut]:
        """Create the job of this name (201) or make it equal this whole definition (200).

        A definition equal to the stored job writes nothing: the version and ETag stay. A change of
        timing recomputes next_run_at as PATCH does; any other change leaves it alone.
        `If-None-Match: *` creates only; `If-Match` updates only the job with that ETag.
        """
        async with conn_for(request) as conn, conn.transaction():
            written = await declare.put_by_name(
                conn,
                namespace=namespace_of(request),
                name=name,
                spec=data,
                if_match=request.headers.get("if-match"),
                if_none_match=request.headers.get("if-none-match"),
                now=now_of(request),
                quota=settings_of(request).namespace_job_quota,
            )
        assert written.job is not None  # noqa: S101 - a write by name never deletes
        if written.change is declare.Change.CREATED:
            return job_response(written.job, HTTP_201_CREATED, {"Location": f"/jobs/{written.job.id}"})
        return job_response(written.job)

    @get("/by-name/{name:str}", responses=problem_responses(401, 404, 429))
    async def get_job_by_name(self, request: Request[Any, Any, Any], name: FromPath[str]) -> Response[JobOut]:
        """Return the job of this name."""
        async with conn_for(request) as conn:
            job = await jobs.get_by_name(conn, namespace=namespace_of(request), name=name)
        return job_response(job)

    @delete(
        "/by-name/{name:str}",
        status_code=HTTP_204_NO_CONTENT,
        responses=problem_responses(401, 404, 412, 429),
    )
    async def delete_job_by_name(self, request: Request[Any, Any, Any], name: FromPath[str]) -> None:
        """Delete the job of this name (with `If-Match`, only at that ETag) and cancel its unfinished runs."""
        async with conn_for(request) as conn, conn.transaction():
            await declare.delete_by_name(
                conn, namespace=namespace_of(request), name=name, if_match=request.headers.get("if-match")
            )

    @post(
        "/apply",
        status_code=200,
        request_max_body_size=MAX_APPLY_BODY,
        responses=problem_responses(400, 401, 409, 413, 422, 429),
    )
    async def apply_jobs(self, request: Request[Any, Any, Any], data: JSONBody[ApplyIn]) -> ApplyOut:
        """Make the namespace's jobs match a declared set, in one transaction.

        Each job is `created`, `updated` (with the fields that change) or `unchanged`; with `prune`,
        the jobs the selector matches that the set leaves out are `deleted`. Every declared job must
        carry the selector's label. `dry_run` answers the same plan and writes nothing.
        """
        async with conn_for(request) as conn, conn.transaction():
            written = await declare.apply(
                conn,
                namespace=namespace_of(request),
                specs=data.jobs,
                selector=declare.selector_of(data.selector.label if data.selector else None),
                prune=data.prune,
                dry_run=data.dry_run,
                now=now_of(request),
                quota=settings_of(request).namespace_job_quota,
            )
        counts = dict.fromkeys(declare.Change, 0)
        for item in written:
            counts[item.change] += 1
        return ApplyOut(
            dry_run=data.dry_run,
            items=[
                Applied(
                    name=item.name,
                    change=item.change.value,
                    fields=item.fields,
                    id=None if data.dry_run or item.job is None else item.job.id,
                    version=None if data.dry_run or item.job is None else item.job.version,
                )
                for item in written
            ],
            created=counts[declare.Change.CREATED],
            updated=counts[declare.Change.UPDATED],
            unchanged=counts[declare.Change.UNCHANGED],
            deleted=counts[declare.Change.DELETED],
        )

    @get("/{job_id:uuid}", responses=problem_responses(401, 404, 429))
    async def get_job(self, request: Request[Any, Any, Any]) -> Response[JobOut]:
        """Return one job."""
        job_id: UUID = request.path_params["job_id"]
        async with conn_for(request) as conn:
            job = await jobs.get(conn, namespace=namespace_of(request), job_id=job_id)
        return job_response(job)

    @patch("/{job_id:uuid}", responses=problem_responses(400, 401, 404, 409, 412, 413, 422, 429))
    async def update_job(
        self, request: Request[Any, Any, Any], job_id: FromPath[UUID], data: JSONBody[JobPatch]
    ) -> Response[JobOut]:
        """Change some fields; with `If-Match` set to the ETag, refuse the change if someone wrote first."""
        async with conn_for(request) as conn, conn.transaction():
            job = await jobs.update(
                conn,
                namespace=namespace_of(request),
                job_id=job_id,
                changes=changes_of(data),
                if_match=request.headers.get("if-match"),
                now=now_of(request),
            )
        return job_response(job)

    @delete("/{job_id:uuid}", status_code=HTTP_204_NO_CONTENT, responses=problem_responses(401, 404, 429))
    async def delete_job(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> None:
        """Delete a job; its pending and running runs are cancelled, its history stays until retention."""
        async with conn_for(request) as conn, conn.transaction():
            await jobs.remove(conn, namespace=namespace_of(request), job_id=job_id)

    @post("/{job_id:uuid}/pause", status_code=200, responses=problem_responses(401, 404, 429))
    async def pause_job(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Response[JobOut]:
        """Stop firing; next_run_at becomes null. Runs already started go on."""
        return await self._set_paused(request, job_id, paused=True)

    @post("/{job_id:uuid}/resume", status_code=200, responses=problem_responses(401, 404, 429))
    async def resume_job(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Response[JobOut]:
        """Fire again from the next slot after now; slots passed while paused are not caught up."""
        return await self._set_paused(request, job_id, paused=False)

    async def _set_paused(
        self, request: Request[Any, Any, Any], job_id: UUID, *, paused: bool
    ) -> Response[JobOut]:
        async with conn_for(request) as conn, conn.transaction():
            job = await jobs.set_paused(
                conn, namespace=namespace_of(request), job_id=job_id, paused=paused, now=now_of(request)
            )
        return job_response(job)

    @post(
        "/{job_id:uuid}/trigger",
        status_code=HTTP_202_ACCEPTED,
        responses=problem_responses(401, 404, 409, 429),
    )
    async def trigger_job(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Response[RunOut]:
        """Fire the job now as a `manual` run, obeying its overlap policy (a skipped fire is recorded).

        With an `Idempotency-Key`, a retry of this request answers the run the first one made.
        """
        async with conn_for(request) as conn, conn.transaction():

            async def write() -> Response[RunOut]:
                made = await jobs.trigger(
                    conn, namespace=namespace_of(request), job_id=job_id, now=now_of(request)
                )
                return Response(RunOut.of(*made), status_code=HTTP_202_ACCEPTED)

            return await guarded(request, conn, RunOut, write)

    @get("/{job_id:uuid}/next-runs", responses=problem_responses(400, 401, 404, 422, 429))
    async def next_runs(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[UUID],
        count: Annotated[int, QueryParameter(ge=1, le=100)] = 10,
    ) -> NextRuns:
        """Upcoming fire times from now (or from start_at), ignoring pause.

        `fires` gives each with the indexes (in `schedules`) of the entries due at it.
        """
        async with conn_for(request) as conn:
            found = await jobs.next_runs(
                conn, namespace=namespace_of(request), job_id=job_id, count=count, now=now_of(request)
            )
        return NextRuns.of(found)

    @get("/{job_id:uuid}/runs", responses=problem_responses(400, 401, 404, 422, 429))
    async def list_runs(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[UUID],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: FromQuery[str | None] = None,
        status: Annotated[str | None, QueryParameter(description=STATUS_LIST, max_length=200)] = None,
    ) -> RunPage:
        """Run history, newest slot first (then newest attempt)."""
        statuses = run_ops.statuses_of(status)
        async with conn_for(request) as conn:
            runs, next_cursor = await jobs.runs_page(
                conn,
                namespace=namespace_of(request),
                job_id=job_id,
                cursor=cursor,
                limit=limit,
                now=now_of(request),
                statuses=statuses,
            )
            job = await jobs.get(conn, namespace=namespace_of(request), job_id=job_id)
        return RunPage(items=RunOut.page(runs, {job.id: job.name}), next_cursor=next_cursor)
