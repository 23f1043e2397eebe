"""The /jobs/{job_id}/notifications resource: the job.failing and job.recovered events of a job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromPath, FromQuery, QueryParameter

from scheduler.api.params import refuse_unknown_query
from scheduler.api.problems import problem_responses
from scheduler.domain.models import project
from scheduler.domain.notifications import Notification, NotificationEvent, NotificationStatus
from scheduler.operations import notifications as notification_ops
from scheduler.web.state import conn_for, namespace_of


class NotificationOut(msgspec.Struct, kw_only=True):
    """One event of a job: what caused it, where it goes, and how its delivery went."""

    id: UUID
    """Also the event's `webhook-id` (as `msg_ntf_<hex>`), the same on every attempt."""
    job_id: UUID
    event: NotificationEvent
    run_id: UUID
    """The run whose end caused it: the final failed attempt of a slot, or the success."""
    run_scheduled_for: datetime
    failed_slots: int
    """Failed slots in a row: reached (job.failing), or ended by the success (job.recovered)."""
    paused: bool
    """Whether the same failure paused the job (notify.pause_after)."""
    url: str
    status: NotificationStatus
    """`pending` (not delivered yet, retried with backoff), `delivered` or `expired` (given up)."""
    attempts: int
    last_attempt_at: datetime | None
    last_http_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, item: Notification) -> NotificationOut:
        """Project a stored event onto its wire shape."""
        return project(cls, item)


class NotificationPage(msgspec.Struct):
    """One page of a job's events, newest first; pass next_cursor back as `cursor` for older ones."""

    items: list[NotificationOut]
    next_cursor: str | None


class NotificationController(Controller):
    """The failure and recovery notifications of the caller's jobs."""

    path = "/jobs"
    tags = ["jobs"]  # noqa: RUF012 - Litestar reads it as a class attribute
    before_request = staticmethod(refuse_unknown_query)

    @get(
        "/{job_id:uuid}/notifications",
        operation_id="listJobNotifications",
        responses=problem_responses(400, 401, 404, 422, 429),
    )
    async def list_notifications(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[UUID],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> NotificationPage:
        """The job's job.failing and job.recovered events, newest first, each with its delivery state.

        Another namespace's job answers 404, as a job that does not exist.
        """
        async with conn_for(request) as conn:
            items, next_cursor = await notification_ops.list_page(
                conn, namespace=namespace_of(request), job_id=job_id, cursor=cursor, limit=limit
            )
        return NotificationPage(items=[NotificationOut.of(item) for item in items], next_cursor=next_cursor)
