"""Request bodies: declared as JSON, then decoded strictly into the handler's Struct in one pass.

Litestar's own pass decodes a body untyped first (a deep array or invalid UTF-8 inside a string
escaped from it as a 500) and then converts it loosely ("30" becomes 30). Handlers here declare
``data: JSONBody[SomeStruct]`` so the OpenAPI document describes the body, and this request class
answers Litestar's call for the JSON with the strictly decoded Struct, which Litestar then passes on
unchanged.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from scheduler.api.problems import FieldError, ProblemError, strict_decode

_UTF8 = ("utf-8", "utf8")


def json_media_type(content_type: str, params: dict[str, str]) -> bool:
    """Whether a request's declared type is JSON: `application/json` or any `*/*+json`, in UTF-8.

    Checking it is what keeps a cross-origin page from creating jobs: browsers send `text/plain`
    and form bodies without a preflight, never `application/json`.
    """
    media_type = content_type.strip().lower()
    kind, slash, subtype = media_type.partition("/")
    if not (kind and slash and (media_type == "application/json" or subtype.endswith("+json"))):
        return False
    charset = params.get("charset")
    return charset is None or charset.strip().strip('"').lower() in _UTF8


def unsupported_media_type(declared: str) -> ProblemError:
    """The 415 of a body declared as something other than JSON (or not declared at all)."""
    shown = declared or "no Content-Type"
    message = f"is {shown}; send the body as application/json (or a +json type, UTF-8)"
    return ProblemError(
        415,
        f"Content-Type {message}",
        errors=[FieldError("Content-Type", message)],
        kind="unsupported-media-type",
    )


class StrictJsonRequest(Request[Any, Any, Any]):
    """A request whose JSON body is refused unless declared as JSON, and decoded strictly."""

    async def json(self) -> Any:
        """The body decoded into the handler's `data` type; a 4xx problem when it is not one."""
        header = self.headers.get("content-type", "")
        media_type, params = self.content_type
        if not header or not json_media_type(media_type, params):
            raise unsupported_media_type(header.strip())
        body = await self.body()
        data_field = self.route_handler.parsed_data_field
        if data_field is None:  # pragma: no cover - Litestar asks for JSON only for a `data` parameter
            return await super().json()
        return strict_decode(body, data_field.annotation)
