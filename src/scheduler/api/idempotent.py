"""The `Idempotency-Key` header on the POSTs that create: a retried request makes one job or one run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response

from scheduler.db import store
from scheduler.db.connections import AsyncConn
from scheduler.operations import idempotency
from scheduler.web.state import namespace_of

REPLAYED_HEADER = "Idempotent-Replayed"
T = TypeVar("T", bound=msgspec.Struct)


async def guarded(
    request: Request[Any, Any, Any],
    conn: AsyncConn,
    shape: type[T],
    write: Callable[[], Awaitable[Response[T]]],
) -> Response[T]:
    """Run ``write`` once per `Idempotency-Key` (in the caller's transaction); without one, just run it.

    A replay answers the first answer's status, body, `Location` and `ETag`, with
    `Idempotent-Replayed: true`.
    """
    key = idempotency.key_of(request.headers.get(idempotency.KEY_HEADER))
    if key is None:
        return await write()

    async def kept() -> store.StoredAnswer:
        response = await write()
        return store.StoredAnswer(
            fingerprint=b"",
            status=response.status_code or 200,
            body=msgspec.json.encode(response.content),
            location=response.headers.get("Location"),
            etag=response.headers.get("ETag"),
        )

    answer, replayed = await idempotency.once(
        conn,
        namespace=namespace_of(request),
        key=key,
        request_fingerprint=idempotency.fingerprint(request.method, request.url.path, await request.body()),
        write=kept,
    )
    headers = {name: value for name, value in (("Location", answer.location), ("ETag", answer.etag)) if value}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return Response(msgspec.json.decode(answer.body, type=shape), status_code=answer.status, headers=headers)
