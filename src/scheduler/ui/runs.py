"""The console's run pages: runs across jobs by slot, one run with what it sent and got back, cancel, retry.

The runs page lists slots, not attempts: each row is one slot of one job with all its attempts in
attempt order, and a job firing every second folds past its first `PER_JOB` slots on a page into
one row that counts the rest (see docs/console.md, "Runs").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Template

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain import names
from scheduler.domain.models import Job, LogAction, Run, RunStatus, RunTrigger
from scheduler.domain.retry import RETRYABLE_BY_REQUEST
from scheduler.domain.zones import zone
from scheduler.operations import pages
from scheduler.operations import runs as run_ops
from scheduler.operations.errors import MalformedError
from scheduler.ui.base import (
    REFUSALS,
    ConsolePages,
    error_page,
    page,
    posted_form,
    redirect,
    viewer_and_namespace,
)
from scheduler.web.state import conn_for, now_of

_WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1),
            "7d": timedelta(days=7)}  # fmt: skip
_STATUS_FILTERS = ("", *[status.value for status in RunStatus])
_TRIGGER_FILTERS = ("", *[trigger.value for trigger in RunTrigger])

SCAN = 300
"""Runs read for one page of slots (newest first); their slots, whole, make the page."""
PAGE_SLOTS = 50
"""Slot rows a page stops at (a page never splits the runs of one millisecond, so it may hold more)."""
PER_JOB = 3
"""Slots of one job shown on a page before its others on that page fold into one row."""
_MS = 80  # a UUIDv7 keeps its millisecond above the low 80 bits
_VERSION_7 = 0x7 << 76 | 0b10 << 62


@dataclass(slots=True)
class Slot:
    """One slot of one job on the runs page, with its attempts in attempt order."""

    job_id: UUID
    scheduled_for: datetime
    attempts: list[Run]

    @property
    def latest(self) -> Run:
        """The newest attempt: the slot's outcome so far."""
        return self.attempts[-1]

    @property
    def first(self) -> Run:
        """The first attempt, whose trigger says why the slot ran (schedule, manual, catch-up)."""
        return self.attempts[0]


@dataclass(slots=True)
class Folded:
    """The slots of a job past its first PER_JOB on a page, counted in one row."""

    job_id: UUID
    slots: int = 0
    not_succeeded: int = 0
    oldest: datetime | None = None


@dataclass(slots=True)
class SlotPage:
    """The rows of one page of slots and where the next page starts."""

    rows: list[Slot | Folded] = field(default_factory=list)
    next_before: UUID | None = None


def _millisecond(run_id: UUID) -> int:
    return run_id.int >> _MS


def _before_millisecond(millisecond: int) -> UUID:
    """The smallest UUIDv7 past ``millisecond``: a cursor whose page holds every run of that millisecond."""
    return UUID(int=(millisecond + 1) << _MS | _VERSION_7)


def page_of_slots(
    scanned: list[Run], *, full: bool, per_job: int | None
) -> tuple[list[tuple[UUID, datetime]], UUID | None]:
    """Which slots (job, slot) a page shows, newest first, and the cursor of the next page.

    ``scanned`` are the newest runs matching the filters, by id, newest first; ``full`` says more
    may follow. A run's id carries its slot's millisecond and every attempt of a slot shares it,
    so the page ends between milliseconds: the runs of the last millisecond read may go on past the
    scan and are left to the next page, whose cursor is just past that millisecond. Only when one
    millisecond fills the whole scan (hundreds of jobs due at the same instant) does the page end
    inside it, at the oldest run read.
    """
    if not scanned:
        return [], None
    blocks: list[list[Run]] = []
    for run in scanned:
        if blocks and _millisecond(blocks[-1][-1].id) == _millisecond(run.id):
            blocks[-1].append(run)
        else:
            blocks.append([run])
    next_before = None
    if full:
        if len(blocks) > 1:
            left = blocks.pop()
            next_before = _before_millisecond(_millisecond(left[0].id))
        else:
            next_before = scanned[-1].id
    slots: list[tuple[UUID, datetime]] = []
    seen: set[tuple[UUID, datetime]] = set()
    shown: dict[UUID, int] = {}
    for number, block in enumerate(blocks):
        for run in block:
            key = (run.job_id, run.scheduled_for)
            if key not in seen:
                seen.add(key)
                slots.append(key)
                shown[run.job_id] = shown.get(run.job_id, 0) + 1
        rows = sum(min(count, per_job) if per_job else count for count in shown.values())
        if rows >= PAGE_SLOTS and number + 1 < len(blocks):
            next_before = _before_millisecond(_millisecond(blocks[number + 1][0].id))
            break
    return slots, next_before


def rows_of(
    slots: list[tuple[UUID, datetime]], attempts: list[Run], *, per_job: int | None
) -> list[Slot | Folded]:
    """The page's rows: each slot with its attempts, a job's slots past ``per_job`` folded into one row."""
    by_slot: dict[tuple[UUID, datetime], list[Run]] = {}
    for run in attempts:  # ordered by job, slot, attempt
        by_slot.setdefault((run.job_id, run.scheduled_for), []).append(run)
    rows: list[Slot | Folded] = []
    shown: dict[UUID, int] = {}
    folds: dict[UUID, Folded] = {}
    for key in slots:
        found = by_slot.get(key)
        if not found:  # ended by retention between the two reads
            continue
        job_id = key[0]
        count = shown.get(job_id, 0)
        if per_job is None or count < per_job:
            shown[job_id] = count + 1
            rows.append(Slot(job_id=job_id, scheduled_for=key[1], attempts=found))
            continue
        fold = folds.get(job_id)
        if fold is None:
            fold = folds[job_id] = Folded(job_id=job_id)
            # Right after the job's last slot shown, so the count sits beside what it continues.
            last = max(i for i, row in enumerate(rows) if isinstance(row, Slot) and row.job_id == job_id)
            rows.insert(last + 1, fold)
        fold.slots += 1
        fold.not_succeeded += found[-1].status is not RunStatus.SUCCEEDED
        fold.oldest = key[1]
    return rows


class RunPages(ConsolePages):
    """Runs of the viewer's jobs."""

    @get("/runs")
    async def runs_page(self, request: Request[Any, Any, Any]) -> Template:
        """The namespace's slots across jobs: filter by job name, status, trigger, label and time window."""
        viewer, namespace = await viewer_and_namespace(request)
        params = request.query_params
        status_text = params.get("status") or ""
        trigger_text = params.get("trigger") or ""
        window = params.get("window") or ""
        job_text = (params.get("job") or "").strip()
        job_id_text = params.get("job_id") or ""
        label_text = (params.get("label") or "").strip()
        errors: list[str] = []
        status = RunStatus(status_text) if status_text in _STATUS_FILTERS[1:] else None
        trigger = RunTrigger(trigger_text) if trigger_text in _TRIGGER_FILTERS[1:] else None
        labels: dict[str, str] = {}
        if label_text:
            try:
                key, value = names.parse_label(label_text)
                labels = {key: value}
            except ValueError as exc:
                errors.append(f"Label: {exc}")
        cursor = params.get("cursor")
        try:
            before = pages.before_id(cursor)
        except MalformedError:
            errors.append("That page link is no longer valid; showing the first page.")
            cursor, before = None, None
        now = now_of(request)
        since = now - _WINDOWS[window] if window in _WINDOWS else None
        async with conn_for(request) as conn:
            job, unknown = await _job_filter(conn, namespace, job_text, job_id_text)
            if unknown:
                errors.append(unknown)
            scanned: list[Run] = []
            if not unknown and not (label_text and not labels):
                scanned = await store.run_list_namespace(
                    conn,
                    namespace=namespace,
                    now=now,
                    limit=SCAN,
                    before_id=before,
                    job_id=job.id if job else None,
                    statuses=[status] if status is not None else None,
                    trigger=trigger,
                    since=since,
                    labels=labels,
                )
            per_job = None if job else PER_JOB
            slots, next_before = page_of_slots(scanned, full=len(scanned) == SCAN, per_job=per_job)
            attempts = await store.run_attempts_of_slots(conn, slots)
            job_names = await store.job_names(
                conn, namespace=namespace, job_ids=sorted({s[0] for s in slots})
            )
        rows = rows_of(slots, attempts, per_job=per_job)
        job_field = job.name if job else job_text
        query = {k: v for k, v in {"job": job_field, "status": status_text, "trigger": trigger_text,
                                   "label": label_text, "window": window}.items() if v}  # fmt: skip
        next_link = (
            "/ui/runs?" + urlencode({**query, "cursor": pages.id_cursor(next_before)})
            if next_before
            else None
        )
        return await page(
            request,
            viewer,
            "runs.html",
            {
                "rows": rows,
                "names": job_names,
                "status": status_text,
                "trigger": trigger_text,
                "window": window,
                "job": job_field,
                "label": label_text,
                "statuses": _STATUS_FILTERS,
                "triggers": _TRIGGER_FILTERS,
                "windows": ["", *_WINDOWS],
                "error": " ".join(errors) or None,
                "next_link": next_link,
                "first_link": "/ui/runs?" + urlencode(query) if cursor else None,
                "filtered_link": lambda name: "/ui/runs?" + urlencode({**query, "job": name}),
                "per_job": PER_JOB,
                "now": now,
            },
        )

    @get("/runs/{run_id:uuid}")
    async def run_page(self, request: Request[Any, Any, Any], run_id: FromPath[UUID]) -> Template:
        """One run: its slot's attempts, what it sent and got back, output, error, runner, timings."""
        viewer, namespace = await viewer_and_namespace(request)
        async with conn_for(request) as conn:
            try:
                run = await run_ops.get(conn, namespace=namespace, run_id=run_id)
            except REFUSALS as refusal:
                raise NotFoundException(str(refusal)) from None
            job = await store.job_get(conn, namespace=namespace, job_id=run.job_id)
            attempts = await store.run_attempts(conn, job_id=run.job_id, scheduled_for=run.scheduled_for)
            sent = await store.run_exchange_get(conn, run_id=run.id, scheduled_for=run.scheduled_for)
        return await page(
            request,
            viewer,
            "run.html",
            {
                "run": run,
                "job": job,
                "attempts": attempts,
                "sent": sent.request,
                "response_headers": sent.response_headers,
                "now": now_of(request),
                **_run_facts(run, attempts, job),
            },
        )

    @post("/runs/{run_id:uuid}/{action:str}")
    async def run_action(
        self, request: Request[Any, Any, Any], run_id: FromPath[UUID], action: FromPath[str]
    ) -> Response[Any]:
        """Cancel or retry a run, as the API's routes do."""
        viewer, namespace = await viewer_and_namespace(request)
        if action not in ("cancel", "retry"):
            raise NotFoundException(f"no action {action!r}")
        try:
            await posted_form(request, viewer)
            async with conn_for(request) as conn, conn.transaction():
                if action == "cancel":
                    done, _ = await run_ops.cancel(conn, namespace=namespace, run_id=run_id)
                else:
                    done, _ = await run_ops.retry(conn, namespace=namespace, run_id=run_id)
        except REFUSALS as problem:
            return await error_page(request, viewer, problem, f"/ui/runs/{run_id}")
        return redirect(f"/ui/runs/{done.id}", done="cancelled" if action == "cancel" else "retried")


async def _job_filter(
    conn: AsyncConn, namespace: str, name: str, job_id: str
) -> tuple[Job | None, str | None]:
    """The job a runs page is narrowed to, by name (or by id, from older links); why not, if none."""
    if name:
        if not names.is_job_name(name):
            return None, f"Job: {name!r} is not a job name (letters, digits, '.', '_' and '-')."
        found = await store.job_get_by_name(conn, namespace=namespace, name=name)
        return (found, None) if found else (None, f"No job is named {name!r} in this namespace.")
    if job_id:
        try:
            wanted = UUID(job_id)
        except ValueError:
            return None, "That job link is not valid; type the job's name instead."
        found = await store.job_get(conn, namespace=namespace, job_id=wanted)
        return (found, None) if found else (None, "No such job in this namespace.")
    return None, None


def _run_facts(run: Run, attempts: list[Run], job: Job | None) -> dict[str, Any]:
    latest = max((attempt.attempt for attempt in attempts), default=run.attempt)
    lateness = None
    if run.started_at is not None and run.trigger in (RunTrigger.SCHEDULE, RunTrigger.CATCHUP):
        lateness = (run.started_at - run.scheduled_for).total_seconds() * 1000
    slot = run.scheduled_for
    if job is not None:
        local = slot.astimezone(zone(job.timezone))
        slot_text = f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"
    else:
        slot_text = f"{slot:%Y-%m-%d %H:%M:%S} UTC"
    return {
        "can_cancel": run.status in (RunStatus.PENDING, RunStatus.RUNNING),
        "can_retry": run.status in RETRYABLE_BY_REQUEST and run.attempt == latest,
        "lateness_ms": lateness,
        "slot_text": slot_text,
        "is_log": job is not None and isinstance(job.action, LogAction),
    }
