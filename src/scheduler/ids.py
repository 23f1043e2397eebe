"""Time-ordered, unguessable identifiers (UUIDv7, RFC 9562)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def uuid7(at: datetime | None = None) -> uuid.UUID:
    """Return a UUIDv7 whose 48-bit timestamp is ``at`` (now when omitted) and the rest random.

    The 74 random bits make ids unguessable; the timestamp keeps them in time order, so an index on
    them stays append-mostly and a run's id tells which partition holds it.
    """
    moment = at if at is not None else datetime.now(UTC)
    millis = (moment - _EPOCH) // timedelta(milliseconds=1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return uuid.UUID(int=value)


def uuid7_time(value: uuid.UUID) -> datetime | None:
    """Return the millisecond timestamp a UUIDv7 carries, or None for any other kind of UUID."""
    if value.version != 7:  # noqa: PLR2004 - the UUID version number
        return None
    millis = value.int >> 80
    return _EPOCH + timedelta(milliseconds=millis)
