"""Routes that are about the service rather than a tenant's jobs: health and schedule preview."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import JSONBody
from litestar.response import Redirect

from scheduler import schedule, store
from scheduler.api.problems import invalid, problem_response, strict_decode
from scheduler.api.schemas import Health, NextRuns, PreviewIn
from scheduler.api.state import conn_for
from scheduler.schedule import ScheduleError, Timing


@get("/healthz", tags=["system"])
async def healthz() -> Health:
    """Liveness: the process serves requests."""
    return Health(status="ok")


@get("/readyz", tags=["system"], response_model=Health)
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """Readiness: the database answers."""
    try:
        async with conn_for(request) as conn:
            await store.health_check(conn)
    except Exception as exc:
        return problem_response(503, f"database unavailable: {type(exc).__name__}")
    return Response(Health(status="ready"))


@post("/schedules/preview", tags=["schedules"], status_code=200)
async def preview(request: Request[Any, Any, Any], data: JSONBody[PreviewIn]) -> NextRuns:
    """Validate a schedule and list its next fire times, without storing anything."""
    data = strict_decode(await request.body(), PreviewIn)
    after = data.after or datetime.now(UTC)
    timing = Timing(data.schedule, data.timezone, anchor_at=after.replace(microsecond=0))
    try:
        schedule.validate(timing, after)
    except ScheduleError as exc:
        raise invalid(exc.field, str(exc)) from None
    return NextRuns(next=schedule.fire_times(timing, after, data.count))


@get("/docs", include_in_schema=False)
async def docs() -> Redirect:
    """The interactive API documentation lives under /schema/."""
    return Redirect(path="/schema/")
