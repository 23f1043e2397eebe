"""The Schedules API: a job's schedule entries, at /jobs/{job_id}/schedules.

Entries live inside their job (its row holds them, its lock guards them, its namespace scopes them),
so they are addressed under it. A flat /schedules/{id} would need a lookup of every job's entries
by id and would sit beside /schedules/preview, which is about no job at all.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from scheduler.api.params import refuse_unknown_query
from scheduler.api.problems import problem_responses
from scheduler.api.schemas import ScheduleEntryOut, ScheduleEntryPage
from scheduler.domain.fields import EntrySpec
from scheduler.domain.schedule import Entry
from scheduler.operations import entries
from scheduler.operations.timing import entry_etag
from scheduler.web.state import conn_for, namespace_of, now_of


def entry_response(
    entry: Entry, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response[Any]:
    """Render an entry with its ETag."""
    return Response(
        ScheduleEntryOut.of(entry),
        status_code=status_code,
        headers={"ETag": entry_etag(entry)} | (headers or {}),
    )


class ScheduleEntryController(Controller):
    """The schedule entries of one job of the caller's namespace."""

    path = "/jobs/{job_id:uuid}/schedules"
    tags = ["schedules"]  # noqa: RUF012 - Litestar reads it as a class attribute
    before_request = staticmethod(refuse_unknown_query)

    @get("/", responses=problem_responses(401, 404, 429))
    async def list_schedule_entries(
        self, request: Request[Any, Any, Any], job_id: FromPath[UUID]
    ) -> ScheduleEntryPage:
        """Every schedule entry of the job, in order; the first is the one the job's `schedule` shows."""
        async with conn_for(request) as conn:
            found = await entries.list_entries(conn, namespace=namespace_of(request), job_id=job_id)
        return ScheduleEntryPage(items=[ScheduleEntryOut.of(entry) for entry in found])

    @post("/", status_code=HTTP_201_CREATED, responses=problem_responses(400, 401, 404, 409, 413, 422, 429))
    async def add_schedule_entry(
        self, request: Request[Any, Any, Any], job_id: FromPath[UUID], data: JSONBody[EntrySpec]
    ) -> Response[ScheduleEntryOut]:
        """Add an entry (at most 20 per job); the job's next run is recomputed from the union."""
        async with conn_for(request) as conn, conn.transaction():
            _, entry = await entries.add_entry(
                conn, namespace=namespace_of(request), job_id=job_id, spec=data, now=now_of(request)
            )
        return entry_response(entry, HTTP_201_CREATED, {"Location": f"/jobs/{job_id}/schedules/{entry.id}"})

    @get("/{schedule_id:uuid}", responses=problem_responses(401, 404, 429))
    async def get_schedule_entry(
        self, request: Request[Any, Any, Any], job_id: FromPath[UUID], schedule_id: FromPath[UUID]
    ) -> Response[ScheduleEntryOut]:
        """One schedule entry of the job, with its ETag."""
        async with conn_for(request) as conn:
            entry = await entries.get_entry(
                conn, namespace=namespace_of(request), job_id=job_id, entry_id=schedule_id
            )
        return entry_response(entry)

    @put("/{schedule_id:uuid}", responses=problem_responses(400, 401, 404, 409, 412, 413, 422, 429))
    async def replace_schedule_entry(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[UUID],
        schedule_id: FromPath[UUID],
        data: JSONBody[EntrySpec],
    ) -> Response[ScheduleEntryOut]:
        """Replace an entry, keeping its id and place; with `If-Match`, only at that ETag."""
        async with conn_for(request) as conn, conn.transaction():
            _, entry = await entries.replace_entry(
                conn,
                namespace=namespace_of(request),
                job_id=job_id,
                entry_id=schedule_id,
                spec=data,
                if_match=request.headers.get("if-match"),
                now=now_of(request),
            )
        return entry_response(entry)

    @delete(
        "/{schedule_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        responses=problem_responses(401, 404, 409, 412, 429),
    )
    async def delete_schedule_entry(
        self, request: Request[Any, Any, Any], job_id: FromPath[UUID], schedule_id: FromPath[UUID]
    ) -> None:
        """Delete an entry; the job's last one is refused (409): delete the job instead."""
        async with conn_for(request) as conn, conn.transaction():
            await entries.remove_entry(
                conn,
                namespace=namespace_of(request),
                job_id=job_id,
                entry_id=schedule_id,
                if_match=request.headers.get("if-match"),
                now=now_of(request),
            )
