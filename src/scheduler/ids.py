"""Time-ordered, unguessable identifiers (UUIDv7, RFC 9562)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Of the 80 bits after the timestamp, keep the random ones and set the version (7) and variant (10).
_RANDOM_BITS = 0x0FFF_3FFF_FFFF_FFFF_FFFF
_VERSION_AND_VARIANT = 0x7000_8000_0000_0000_0000
# Runners make an id per fire: the low 80 bits of ids are made 400 at a time from one urandom call
# (4 KB), each handed out once (list.pop is atomic, so threads never share one).
_BATCH = 400
_lows: list[int] = []
# A forked child must not hand out the ids its parent has already made.
os.register_at_fork(after_in_child=_lows.clear)
# Looked up once: uuid7 runs once per fire, and on Python 3.11 reading an enum member off its
# class (SafeUUID.unknown) costs more than the arithmetic.
_UUID = uuid.UUID
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown
_new = object.__new__
_set = object.__setattr__


def _more_lows() -> None:
    pool = os.urandom(10 * _BATCH)
    _lows.extend(
        int.from_bytes(pool[at : at + 10], "big") & _RANDOM_BITS | _VERSION_AND_VARIANT
        for at in range(0, len(pool), 10)
    )


def uuid7(at: datetime | None = None) -> uuid.UUID:
    """Return a UUIDv7 whose 48-bit timestamp is ``at`` (now when omitted) and the rest random.

    The 74 random bits make ids unguessable; the timestamp keeps them in time order, so an index on
    them stays append-mostly and a run's id tells which partition holds it.
    """
    delta = (at if at is not None else datetime.now(UTC)) - _EPOCH
    # Floor of the delta in milliseconds, in small ints (`delta // 1 ms` goes through big ones).
    millis = delta.days * 86_400_000 + delta.seconds * 1_000 + delta.microseconds // 1_000
    try:
        low = _lows.pop()
    except IndexError:
        _more_lows()
        low = _lows.pop()
    # The value is valid by construction; skip UUID.__init__'s parsing, which costs more than the rest.
    made = _new(_UUID)
    _set(made, "int", (millis & 0xFFFF_FFFF_FFFF) << 80 | low)
    _set(made, "is_safe", _UNKNOWN_SAFETY)
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
