"""Time-ordered, unguessable identifiers (UUIDv7, RFC 9562)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
# Of the 80 bits after the timestamp, keep the random ones and set the version (7) and variant (10).
_RANDOM_BITS = 0x0FFF_3FFF_FFFF_FFFF_FFFF
_VERSION_AND_VARIANT = 0x7000_8000_0000_0000_0000
# Runners make an id per fire; one urandom call per 4 KiB instead of one per id.
_POOL_SIZE = 4096
_pool = b""
_offset = _POOL_SIZE


def _random80() -> int:
    global _pool, _offset  # noqa: PLW0603 - a process-local buffer of OS randomness
    if _offset + 10 > len(_pool):
        _pool, _offset = os.urandom(_POOL_SIZE), 0
    start = _offset
    _offset += 10
    return int.from_bytes(_pool[start : start + 10], "big")


def uuid7(at: datetime | None = None) -> uuid.UUID:
    """Return a UUIDv7 whose 48-bit timestamp is ``at`` (now when omitted) and the rest random.

    The 74 random bits make ids unguessable; the timestamp keeps them in time order, so an index on
    them stays append-mostly and a run's id tells which partition holds it.
    """
    moment = at if at is not None else datetime.now(UTC)
    millis = (moment - _EPOCH) // _MILLISECOND
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | (_random80() & _RANDOM_BITS) | _VERSION_AND_VARIANT
    # The value is valid by construction; skip UUID.__init__'s parsing, which costs more than the rest.
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", uuid.SafeUUID.unknown)
    return made


def uuid7_time(value: uuid.UUID) -> datetime | None:
    """Return the millisecond timestamp a UUIDv7 carries, or None for any other kind of UUID."""
    if value.version != 7:  # noqa: PLR2004 - the UUID version number
        return None
    millis = value.int >> 80
    try:
        return _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:  # 48 bits of milliseconds reach past 9999, which no datetime (and no run) holds
        return None
