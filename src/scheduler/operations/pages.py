"""Cursors: where the next page of a listing starts, handed out opaque and read back strictly."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from uuid import UUID

from scheduler.domain import names
from scheduler.operations.errors import MalformedError

_NOT_OURS = "is not a cursor this API returned"


def encode_cursor(value: str) -> str:
    """Make a cursor opaque (and URL-safe)."""
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """Undo encode_cursor; MalformedError naming `cursor` when it was not ours."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise MalformedError.field("cursor", _NOT_OURS) from None


def name_cursor(name: str) -> str:
    """The cursor of a page of jobs that ends at the job named ``name``."""
    return encode_cursor(name)


def after_name(cursor: str | None) -> str | None:
    """The job name a page of jobs starts after."""
    if cursor is None:
        return None
    name = decode_cursor(cursor)
    if not names.is_job_name(name):
        raise MalformedError.field("cursor", _NOT_OURS)
    return name


def slot_cursor(scheduled_for: datetime, attempt: int) -> str:
    """The cursor of a page of one job's runs that ends at this slot's attempt."""
    return encode_cursor(f"{scheduled_for.isoformat()}|{attempt}")


def before_slot(cursor: str | None) -> tuple[datetime, int] | None:
    """The (slot, attempt) a page of one job's runs continues before."""
    if cursor is None:
        return None
    slot, _, attempt = decode_cursor(cursor).partition("|")
    try:
        moment = datetime.fromisoformat(slot)
        number = int(attempt)
    except ValueError:
        raise MalformedError.field("cursor", _NOT_OURS) from None
    if moment.utcoffset() is None:
        raise MalformedError.field("cursor", _NOT_OURS)
    return moment, number


def id_cursor(run_id: UUID) -> str:
    """The cursor of a page of runs across jobs that ends at this run."""
    return encode_cursor(str(run_id))


def before_id(cursor: str | None) -> UUID | None:
    """The run id a page of runs across jobs continues before."""
    if cursor is None:
        return None
    try:
        return UUID(decode_cursor(cursor))
    except ValueError:
        raise MalformedError.field("cursor", _NOT_OURS) from None
