"""JSON answers encoded once by msgspec and sent as two ASGI messages: the job routes' fast path.

Litestar's own Response builds header containers, merges type encoders and cookies and copies the
headers twice on every answer; for a point lookup that measured about a tenth of the request's CPU
(issue #25: GET /jobs/{id} against a bare route). These answers keep the same status, headers and
body, and the handler's return annotation (`Response[JobOut]`) still tells the OpenAPI document
what they hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from litestar import Response
from litestar.response.base import ASGIResponse

if TYPE_CHECKING:
    from litestar.types import Receive, Scope, Send

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_JSON = (b"content-type", b"application/json")


class _Sent(ASGIResponse):
    """The ASGI side of an `EncodedResponse`: its start message is built once, then sent with the body."""

    __slots__ = ("_start",)

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        # ASGIResponse's own __init__ is what this skips: none of its work applies to a body
        # already encoded and headers already bytes.
        self.body = body
        self.status_code = status
        self.background = None
        self.is_head_response = False
        self._start = {"type": "http.response.start", "status": status, "headers": headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002 - ASGI's signature
        """Send the start message, then the whole body."""
        await send(self._start)  # type: ignore[arg-type]
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


class EncodedResponse(Response[T]):
    """A JSON response of a msgspec-encodable value, with plain string headers (ETag, Location).

    It reads as a Litestar Response (``content``, ``status_code``, ``headers``), so code that
    keeps an answer (the Idempotency-Key replay) treats it like any other.
    """

    def __init__(
        self, content: T, *, status_code: int | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """Hold ``content`` to encode when the response is sent."""
        # Every slot Response reads is set, without the containers its __init__ builds per answer.
        self.content = content
        self.status_code = status_code
        self.headers = dict(headers) if headers else {}
        self.background = None
        self.cookies = []
        self.encoding = "utf-8"
        self.media_type = "application/json"
        self.response_type_encoders = {}

    def to_asgi_response(self, *_: Any, **route: Any) -> ASGIResponse:
        """Encode the content and headers once.

        Of what Litestar passes, only the route's status code is used (when the response sets none):
        the routes answering this way declare no headers, cookies or type encoders, and msgspec
        encodes every field of their Structs.
        """
        body = _encode(self.content)
        sent = [
            (name.lower().encode("latin-1"), str(value).encode("latin-1"))
            for name, value in self.headers.items()
        ]
        sent.append(_JSON)
        sent.append((b"content-length", str(len(body)).encode()))
        return _Sent(self.status_code or route.get("status_code") or 200, sent, body)
