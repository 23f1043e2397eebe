"""Jobs as code: write a job by its name as a whole definition, and make a declared set of jobs so.

A deploy declares its jobs; these make the stored jobs match. Writing a definition that equals the
stored job writes nothing (its version and ETag stay), so a deploy that runs twice changes nothing
the second time. Each runs in the caller's transaction; a refusal anywhere leaves nothing written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.domain.models import Job, JobValues, project
from scheduler.domain.names import parse_label
from scheduler.domain.validation import FieldError
from scheduler.operations import jobs
from scheduler.operations.errors import ConflictError, InvalidError, NotFoundError, PreconditionFailedError

MAX_APPLY = 20_000
"""Most jobs one apply may declare."""


class Change(StrEnum):
    """What a declared definition did to the job of its name."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


@dataclass(slots=True)
class Written:
    """One job of a write by name or an apply: what happened to it, and which fields changed."""

    name: str
    change: Change
    job: Job | None
    """The job as it stands after the write; None once deleted, and for a dry run's creates."""
    fields: list[str] = field(default_factory=list)
    """The settable fields whose values change (an update), in the order of the job's fields."""


def changed_fields(job: Job, values: JobValues) -> list[str]:
    """The settable fields whose values differ between a stored job and new values for it."""
    return [name for name in jobs.SETTABLE_FIELDS if getattr(job, name) != getattr(values, name)]


@dataclass(slots=True)
class _Plan:
    """What writing one definition will do, decided before anything is written."""

    name: str
    change: Change
    current: Job | None
    values: JobValues | None
    """The values to write (a create or an update); None when unchanged."""
    fields: list[str] = field(default_factory=list)


def _plan(*, namespace: str, current: Job | None, spec: object, now: datetime) -> _Plan:
    """Decide what the definition ``spec`` does to the ``current`` job of its name (None: none yet)."""
    if current is None:
        values = jobs.new_values(namespace=namespace, spec=spec, now=now)
        return _Plan(values.name, Change.CREATED, None, values)
    values = jobs.merge(current, {name: getattr(spec, name) for name in jobs.SETTABLE_FIELDS}, now)
    if values == project(JobValues, current):
        return _Plan(current.name, Change.UNCHANGED, current, None)
    jobs.check(values)
    return _Plan(current.name, Change.UPDATED, current, values, changed_fields(current, values))


def _created_meanwhile(name: str) -> ConflictError:
    return ConflictError(f"a job named {name!r} was created meanwhile by another request; retry")


async def _write(
    conn: AsyncConn, *, namespace: str, current: Job | None, spec: object, now: datetime
) -> Written:
    """Create the job of ``spec``, or make the ``current`` one equal it; the caller counts creates."""
    plan = _plan(namespace=namespace, current=current, spec=spec, now=now)
    if plan.values is None:
        return Written(plan.name, plan.change, plan.current)
    if plan.change is Change.CREATED:
        created = await store.job_insert(conn, plan.values)
        if created is None:  # created by a request that committed after our locks were taken
            raise _created_meanwhile(plan.name)
        return Written(plan.name, Change.CREATED, created)
    updated = await store.job_update(conn, plan.values)
    return Written(plan.name, Change.UPDATED, updated or plan.current, plan.fields)


async def _write_all(conn: AsyncConn, plans: Sequence[_Plan]) -> list[Written]:
    """Write every plan: the creates in one statement and the updates in another."""
    creates = [plan.values for plan in plans if plan.change is Change.CREATED and plan.values is not None]
    updates = [plan.values for plan in plans if plan.change is Change.UPDATED and plan.values is not None]
    created = {job.name: job for job in await store.job_insert_many(conn, creates)}
    if len(created) < len(creates):  # some were created by a request after our locks were taken
        raise _created_meanwhile(next(values.name for values in creates if values.name not in created))
    updated = {job.name: job for job in await store.job_update_many(conn, updates)}
    written: list[Written] = []
    for plan in plans:
        if plan.change is Change.CREATED:
            written.append(Written(plan.name, plan.change, created[plan.name]))
        else:
            written.append(Written(plan.name, plan.change, updated.get(plan.name, plan.current), plan.fields))
    return written


async def put_by_name(
    conn: AsyncConn,
    *,
    namespace: str,
    name: str,
    spec: object,
    if_match: str | None,
    if_none_match: str | None,
    now: datetime,
    quota: int,
) -> Written:
    """Create the job ``name`` from ``spec``, or make the stored one equal ``spec`` (a whole definition).

    ``if_none_match: *`` refuses when the job exists; ``if_match`` refuses unless the stored job has
    one of its ETags (a job that does not exist matches none, so `If-Match: *` means "only update").
    """
    if getattr(spec, "name", name) != name:
        raise InvalidError.field("name", f"must be {name!r}, the name in the path")
    current = await store.job_lock_by_name(conn, namespace=namespace, name=name)
    if if_none_match is not None and current is not None and if_none_match.strip() == "*":
        raise PreconditionFailedError(
            f"a job named {name!r} exists (If-None-Match: *); its ETag is {jobs.etag(current)}"
        )
    if if_match is not None and (current is None or not jobs.if_match_allows(if_match, current)):
        now_is = f"its ETag is now {jobs.etag(current)}" if current is not None else "no job has this name"
        raise PreconditionFailedError(f"the job changed: {now_is}, not {if_match.strip()}")
    written = await _write(conn, namespace=namespace, current=current, spec=spec, now=now)
    if written.change is Change.CREATED:
        await jobs.count_jobs(conn, namespace=namespace, delta=1, quota=quota)
    return written


async def delete_by_name(conn: AsyncConn, *, namespace: str, name: str, if_match: str | None) -> None:
    """Delete the job of this name; with ``if_match``, only while it has one of those ETags."""
    current = await store.job_lock_by_name(conn, namespace=namespace, name=name)
    if current is None:
        raise NotFoundError(f"no job named {name!r}")
    if if_match is not None and not jobs.if_match_allows(if_match, current):
        raise PreconditionFailedError(
            f"the job changed: its ETag is now {jobs.etag(current)}, not {if_match.strip()}"
        )
    await jobs.remove(conn, namespace=namespace, job_id=current.id)


def selector_of(text: str | None) -> dict[str, str] | None:
    """The label an apply's selector names (`key=value`), or None for none."""
    if text is None:
        return None
    try:
        key, value = parse_label(text)
    except ValueError as exc:
        raise InvalidError.field("selector.label", str(exc)) from None
    return {key: value}


def _refuse_bad_set(specs: Sequence[object], selector: dict[str, str] | None, *, prune: bool) -> None:
    errors: list[FieldError] = []
    if prune and selector is None:
        errors.append(FieldError("selector", "prune needs a selector: the label that marks the set's jobs"))
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        name: str = getattr(spec, "name")  # noqa: B009 - any object with the settable fields
        if name in seen:
            errors.append(
                FieldError(f"jobs.{index}.name", f"{name!r} is declared twice (also jobs.{seen[name]})")
            )
        seen.setdefault(name, index)
        labels: dict[str, str] = getattr(spec, "labels")  # noqa: B009
        for key, value in (selector or {}).items():
            if labels.get(key) != value:
                errors.append(
                    FieldError(
                        f"jobs.{index}.labels",
                        f"job {name!r} does not carry the selector's label {key}={value}, "
                        "so a prune would not know it as one of this set's",
                    )
                )
    if len(specs) > MAX_APPLY:
        errors.append(FieldError("jobs", f"at most {MAX_APPLY} jobs in one apply"))
    if errors:
        raise InvalidError.of(errors)


async def apply(
    conn: AsyncConn,
    *,
    namespace: str,
    specs: Sequence[object],
    selector: dict[str, str] | None,
    prune: bool,
    dry_run: bool,
    now: datetime,
    quota: int,
) -> list[Written]:
    """Make the namespace's jobs match a declared set, in the caller's one transaction.

    Each declared job is created, updated or left unchanged; with ``prune``, the jobs whose labels
    hold ``selector`` and that the set does not declare are deleted. Every declared job must carry
    the selector's label, so a mistyped selector cannot prune another team's jobs. Every bad field of
    every job is named (`jobs.3.schedule`) and refuses the whole set. ``dry_run`` writes nothing and
    answers the same plan. Applies in a namespace take turns, so two never interleave.
    """
    _refuse_bad_set(specs, selector, prune=prune)
    # A dry run does all of it, quota included, and rolls it back: its plan is the real one.
    async with conn.transaction(force_rollback=dry_run):
        return await _apply(
            conn, namespace=namespace, specs=specs, selector=selector, prune=prune, now=now, quota=quota
        )


async def _apply(
    conn: AsyncConn,
    *,
    namespace: str,
    specs: Sequence[object],
    selector: dict[str, str] | None,
    prune: bool,
    now: datetime,
    quota: int,
) -> list[Written]:
    names = [str(getattr(spec, "name")) for spec in specs]  # noqa: B009
    await store.job_apply_lock(conn, namespace=namespace)
    locked = await store.job_lock_for_apply(
        conn, namespace=namespace, names=names, selector=selector if prune else None
    )
    stored = {job.name: job for job in locked}
    plans: list[_Plan] = []
    errors: list[FieldError] = []
    for index, spec in enumerate(specs):
        try:
            plans.append(_plan(namespace=namespace, current=stored.get(names[index]), spec=spec, now=now))
        except InvalidError as exc:
            errors.extend(
                FieldError(f"jobs.{index}.{e.field}", f"job {names[index]!r}: {e.message}")
                for e in exc.errors
            )
    if errors:
        raise InvalidError.of(errors)
    # Every definition is checked before anything is written; then the writes are two statements,
    # whatever the number of jobs, rather than a round trip each.
    written = await _write_all(conn, plans)
    declared = set(names)
    pruned = [job for job in locked if prune and job.name not in declared]
    # A pruned job with no unfinished runs (active_runs counts them exactly, and its lock, held
    # since job_lock_for_apply, keeps runs from starting) has nothing to cancel: those go in one
    # delete, counted out below with the creates. The others are removed one by one, runs first.
    idle = [job.id for job in pruned if job.active_runs == 0]
    for job in pruned:
        if job.active_runs:
            await jobs.remove(conn, namespace=namespace, job_id=job.id)
    deleted = await store.job_delete_many(conn, namespace=namespace, job_ids=idle)
    if deleted != len(idle):  # pragma: no cover - the rows are locked
        raise ConflictError("jobs the apply prunes were deleted meanwhile by another request; retry")
    written.extend(Written(job.name, Change.DELETED, None) for job in pruned)
    created = sum(1 for item in written if item.change is Change.CREATED)
    await jobs.count_jobs(conn, namespace=namespace, delta=created - deleted, quota=quota)
    return written
