"""Idempotency keys: a POST retried with the same key answers what the first one answered.

The key is taken in the transaction of the write it guards and the answer is kept in the same
transaction, so a key exists exactly when its write committed. A retry that arrives while the first
request is still writing waits for it on the key's row, then reads its answer; a key sent again with
another request (another route, job or body) is refused. Keys last 24 hours per namespace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.operations.errors import InvalidError

MAX_KEY = 255
KEY_HEADER = "Idempotency-Key"


def key_of(header: str | None) -> str | None:
    """The key an `Idempotency-Key` header carries (a structured-field string, quotes optional)."""
    if header is None:
        return None
    text = header.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':  # noqa: PLR2004 - a quoted string
        text = text[1:-1]
    if not text or len(text) > MAX_KEY or not all("\x21" <= ch <= "\x7e" for ch in text):
        raise InvalidError.field(KEY_HEADER, f"must be 1-{MAX_KEY} visible ASCII characters")
    return text


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What identifies a request: its method, its path and its body."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


async def once(
    conn: AsyncConn,
    *,
    namespace: str,
    key: str,
    request_fingerprint: bytes,
    write: Callable[[], Awaitable[store.StoredAnswer]],
) -> tuple[store.StoredAnswer, bool]:
    """Run ``write`` under ``key`` (in the caller's transaction), or answer as its first use did.

    Returns the answer and whether it is a replay.
    """
    if await store.idempotency_claim(conn, namespace=namespace, key=key, fingerprint=request_fingerprint):
        answer = await write()
        await store.idempotency_record(conn, namespace=namespace, key=key, answer=answer)
        return answer, False
    first = await store.idempotency_get(conn, namespace=namespace, key=key)
    if first is None:  # pragma: no cover - a live key that is not there: deleted between the two
        raise InvalidError.field(KEY_HEADER, "was just expired; send the request again")
    if first.fingerprint != request_fingerprint:
        raise InvalidError.field(
            KEY_HEADER, "was used with another request (route, job or body); use a new key for this one"
        )
    return first, True
