"""A job's timing as its owner writes it: one schedule or several entries, and exclusions.

A job with one schedule entry keeps it in its ``schedule``, ``timezone``, ``start_at`` and
``end_at`` fields, exactly as before entries existed; its entry's id is made from the job's id, so
it is the same whenever it is asked for. A job with several lists them all in ``schedules`` and
the four fields repeat the first. Writing ``schedules`` replaces the whole list: an entry keeps its
id (and the anchor of an ``@every``) when the list gives the id, or else when an entry of the same
expression, zone and bounds was there before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, SafeUUID

import msgspec

from scheduler.domain.exclusions import Exclusions
from scheduler.domain.fields import EntrySpec, ExclusionsSpec
from scheduler.domain.models import JobValues
from scheduler.domain.schedule import Entry
from scheduler.ids import uuid7
from scheduler.operations.errors import ConflictError, InvalidError

SINGLE_FIELDS = ("schedule", "timezone", "start_at", "end_at")
"""The fields of a job's first (or only) schedule entry."""
TIMING_FIELDS = (*SINGLE_FIELDS, "schedules", "exclusions")
"""Every settable field that decides when a job fires."""
_MIRRORED = ("schedule", "start_at", "end_at")
PREVIEW_JOB_ID = UUID(int=0)
"""The id of the job a preview makes up (never stored)."""


def anchor_for(start_at: datetime | None, now: datetime) -> datetime:
    """Where `@every` counts from: start_at, else ``now`` truncated to the second."""
    return start_at if start_at is not None else now.replace(microsecond=0)


# uuid5(job_id, "schedule") spelled out (RFC 9562 5.5): a create makes one per job, and an apply
# thousands, where uuid.uuid5's UUID(bytes=..., version=5) parsing costs more than the SHA-1.
_UUID5_CLEAR = ~(0xF000 << 64 | 0xC000 << 48)
_UUID5_SET = 5 << 76 | 0x8000 << 48
_new = object.__new__
_set = object.__setattr__


def first_entry_id(job_id: UUID) -> UUID:
    """The id of a job's entry while it has only the one it was made with: uuid5(job_id, "schedule")."""
    digest = hashlib.sha1(job_id.bytes + b"schedule", usedforsecurity=False).digest()
    made = _new(UUID)
    _set(made, "int", int.from_bytes(digest[:16], "big") & _UUID5_CLEAR | _UUID5_SET)
    _set(made, "is_safe", SafeUUID.unknown)
    return made


def entries_of(values: JobValues) -> tuple[Entry, ...]:
    """Every schedule entry of a job, its only one included."""
    if values.schedules:
        return values.schedules
    return (
        Entry(
            schedule=values.schedule,
            timezone=values.timezone,
            anchor_at=values.anchor_at,
            start_at=values.start_at,
            end_at=values.end_at,
            id=first_entry_id(values.id),
        ),
    )


def entry_etag(entry: Entry) -> str:
    """The strong validator of one entry: a digest of everything it holds."""
    return '"' + hashlib.sha256(msgspec.json.encode(entry)).hexdigest()[:24] + '"'


def set_entries(values: JobValues, entries: Sequence[Entry], *, own_first_id: UUID | None = None) -> None:
    """Make ``entries`` the job's; the four single fields repeat the first.

    ``own_first_id`` is `first_entry_id(values.id)` when the caller has it already.
    """
    first = entries[0]
    values.schedule = first.schedule
    values.timezone = first.timezone
    values.start_at = first.start_at
    values.end_at = first.end_at
    values.anchor_at = first.anchor_at
    alone = (
        len(entries) == 1
        and not first.paused
        and first.id == (own_first_id if own_first_id is not None else first_entry_id(values.id))
    )
    values.schedules = () if alone else tuple(entries)


def entry_of(
    spec: EntrySpec, *, default_zone: str, kept: Entry | None, entry_id: UUID, now: datetime
) -> Entry:
    """An entry from its spec; ``kept``, the entry it replaces, lends its anchor if its expression stays."""
    same_series = kept is not None and kept.schedule == spec.schedule and kept.start_at == spec.start_at
    return Entry(
        schedule=spec.schedule,
        timezone=spec.timezone or default_zone,
        anchor_at=kept.anchor_at if kept is not None and same_series else anchor_for(spec.start_at, now),
        start_at=spec.start_at,
        end_at=spec.end_at,
        paused=spec.paused,
        id=entry_id,
    )


def entries_from(
    specs: Sequence[EntrySpec], *, default_zone: str, previous: Sequence[Entry], now: datetime
) -> list[Entry]:
    """The entries a whole list writes, keeping the ids and anchors of those that were there."""
    taken: set[UUID] = set()
    made: list[Entry] = []
    for index, spec in enumerate(specs):
        zone = spec.timezone or default_zone
        if spec.id is not None:
            entry_id = spec.id
            kept = next((entry for entry in previous if entry.id == spec.id), None)
        else:
            key = (spec.schedule, zone, spec.start_at, spec.end_at)
            kept = next(
                (
                    entry
                    for entry in previous
                    if entry.id not in taken
                    and (entry.schedule, entry.timezone, entry.start_at, entry.end_at) == key
                ),
                None,
            )
            entry_id = kept.id if kept is not None and kept.id is not None else uuid7(now)
        if entry_id in taken:
            raise InvalidError.field(
                f"schedules[{index}].id", f"{entry_id} is the id of another entry in the list"
            )
        taken.add(entry_id)
        made.append(entry_of(spec, default_zone=zone, kept=kept, entry_id=entry_id, now=now))
    return made


def exclusions_from(spec: ExclusionsSpec | None, *, default_zone: str) -> Exclusions | None:
    """The stored form of exclusions: dates sorted once each, the zone written out; None for none."""
    if spec is None or (not spec.dates and not spec.calendars):
        return None
    return Exclusions(
        dates=tuple(sorted(set(spec.dates))),
        calendars=tuple(spec.calendars),
        timezone=spec.timezone or default_zone,
    )


def assign(values: JobValues, changes: Mapping[str, Any], *, before: JobValues | None, now: datetime) -> None:
    """Set the timing of ``values`` from the timing fields in ``changes``.

    ``before`` is the job as stored (None for a new one); fields absent from ``changes`` keep its
    values. ``changes`` holding ``schedules`` (a list) writes the whole list; holding it as None (a
    whole definition written by name) makes the job one entry again, from the single fields.
    Changing a single field of a job with several entries is refused: which entry would it change?
    """
    if "exclusions" in changes:
        values.exclusions = None  # set below, once the zone of the first entry is known
    specs = changes.get("schedules")
    if specs is not None:
        default_zone = changes.get("timezone") or (before.timezone if before is not None else "UTC")
        previous = entries_of(before) if before is not None else ()
        entries = entries_from(specs, default_zone=default_zone, previous=previous, now=now)
        for name in _MIRRORED:
            given = changes.get(name)
            if given is not None and given != getattr(entries[0], name):
                raise InvalidError.field(
                    name,
                    f"must equal the first schedule entry's {name}, or be left out when `schedules` is given",
                )
        set_entries(values, entries)
    elif "schedules" in changes or before is None or len(before.schedules) <= 1:
        _assign_single(values, changes, before=before, now=now)
    elif touched := [name for name in SINGLE_FIELDS if name in changes]:
        raise ConflictError(
            f"the job has {len(before.schedules)} schedule entries, so {', '.join(touched)} would not "
            "say which to change; send the whole list as `schedules`, or change one entry at "
            f"/jobs/{before.id}/schedules"
        )
    if "exclusions" in changes:
        values.exclusions = exclusions_from(changes["exclusions"], default_zone=values.timezone)


def _assign_single(
    values: JobValues, changes: Mapping[str, Any], *, before: JobValues | None, now: datetime
) -> None:
    def given(name: str) -> Any:
        if name in changes:
            return changes[name]
        return getattr(before, name) if before is not None else None

    schedule_text = given("schedule")
    if schedule_text is None:
        raise InvalidError.field("schedule", "is required: send `schedule`, or `schedules` for several")
    # The one entry there was (its id and pause kept), unless a whole definition replaces several.
    previous = entries_of(before) if before is not None else ()
    kept = previous[0] if len(previous) == 1 else None
    start_at = given("start_at")
    same_series = kept is not None and kept.schedule == schedule_text and kept.start_at == start_at
    own_id = first_entry_id(values.id)
    entry = Entry(
        schedule=schedule_text,
        timezone=given("timezone") or "UTC",
        anchor_at=kept.anchor_at if kept is not None and same_series else anchor_for(start_at, now),
        start_at=start_at,
        end_at=given("end_at"),
        paused=kept.paused if kept is not None else False,
        id=kept.id if kept is not None else own_id,
    )
    set_entries(values, [entry], own_first_id=own_id)
