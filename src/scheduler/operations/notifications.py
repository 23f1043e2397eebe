"""Reading a job's failure and recovery notifications: for the API, and the console beside each run."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain.notifications import Notification
from scheduler.operations import jobs, pages
from scheduler.operations.errors import MalformedError

_NOT_OURS = "is not a cursor this API returned"


def _before_seq(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    text = pages.decode_cursor(cursor)
    if not text.startswith("n") or not text[1:].isdigit() or len(text) > 20:  # noqa: PLR2004 - a bigint
        raise MalformedError.field("cursor", _NOT_OURS)
    return int(text[1:])


async def list_page(
    conn: AsyncConn, *, namespace: str, job_id: UUID, cursor: str | None, limit: int
) -> tuple[list[Notification], str | None]:
    """A page of the job's notifications newest first, and the next page's cursor (None on the last).

    NotFoundError when the namespace has no such job, as for every read of a job.
    """
    before = _before_seq(cursor)
    await jobs.get(conn, namespace=namespace, job_id=job_id)
    found = await store.notification_list_for_job(
        conn, namespace=namespace, job_id=job_id, before_seq=before, limit=limit
    )
    if len(found) < limit:
        return found, None
    return found, pages.encode_cursor(f"n{found[-1].seq}")


async def by_run(
    conn: AsyncConn, *, namespace: str, job_id: UUID, run_ids: Sequence[UUID]
) -> dict[UUID, list[Notification]]:
    """The notifications each of these runs of the job caused (newest first), for showing beside them.

    Runs that caused none are absent; a job of another namespace has none.
    """
    found: dict[UUID, list[Notification]] = {}
    for item in await store.notification_list_for_runs(
        conn, namespace=namespace, job_id=job_id, run_ids=run_ids
    ):
        found.setdefault(item.run_id, []).append(item)
    return found
