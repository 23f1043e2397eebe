"""RFC 9457 problem responses: every error the API returns, in one shape that names the field."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any, TypeVar

import msgspec
import psycopg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from psycopg.errors import ReadOnlySqlTransaction
from psycopg_pool import PoolTimeout

from scheduler.db.connections import ReadOnlyServer, StalePlan
from scheduler.domain.validation import FieldError
from scheduler.operations.errors import OperationError
from scheduler.web.errors import status_of
from scheduler.web.state import CONNECTION_LOST_KEY, REQUEST_ID_KEY

log = structlog.get_logger("scheduler.api")
T = TypeVar("T")

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://scheduler.dev/problems/"
"""Where every problem type URI starts; the kind of problem follows."""
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


class Problem(msgspec.Struct, omit_defaults=True):
    """The RFC 9457 body."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = msgspec.field(default_factory=list)


class ProblemError(Exception):
    """Raised by handlers to answer with a problem; nothing has been written when it is raised."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Describe the problem; ``kind`` becomes the last part of the type URI."""
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.kind = kind or _slug(HTTPStatus(status).phrase)
        self.headers = headers or {}


# What each problem status means, as the OpenAPI document describes it.
_PROBLEM_MEANINGS: dict[int, str] = {
    400: "MalformedError request: the body is not JSON, or a cursor or filter is not usable",
    401: "Missing or invalid API key",
    404: "No such resource in the caller's namespace",
    409: "The request conflicts with the resource's current state",
    412: "If-Match does not match the job's current ETag",
    413: "The request body is larger than 1 MiB (32 MiB for POST /jobs/apply)",
    415: "The request body is not declared as application/json (or a +json type)",
    422: "InvalidError values (each named in `errors`), or the namespace's job quota is used up",
    429: "The key's rate limit is used up; Retry-After says when to try again",
    503: "The database does not answer",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The OpenAPI entries of the problems an operation answers with (RFC 9457 bodies)."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=_PROBLEM_MEANINGS[status],
            generate_examples=False,
        )
        for status in statuses
    }


def invalid(field: str, message: str, *, status: int = 422) -> ProblemError:
    """Build the problem for one bad field."""
    return ProblemError(
        status, f"{field}: {message}", errors=[FieldError(field, message)], kind="invalid-request"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def problem_response(
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    """Render a problem."""
    title = HTTPStatus(status).phrase
    body = Problem(
        type=f"{PROBLEM_TYPE_BASE}{kind or _slug(title)}",
        title=title,
        status=status,
        detail=detail,
        errors=errors or [],
    )
    return Response(
        content=msgspec.json.encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _field_from(key: str, message: str) -> tuple[str, str]:
    """Turn Litestar's (key, message) from a msgspec decode into (field path, message)."""
    field = "" if key in ("data", "body") else key
    at = _AT_PATH.search(message)
    if at:
        message = message[: at.start()]
        path = at.group(1)
        field = f"{field}.{path}" if field and path else (path or field)
    unknown = _UNKNOWN_FIELD.search(message)
    if unknown:  # msgspec names the unknown key in the message and its object in the path
        name = unknown.group(1)
        field, message = (f"{field}.{name}" if field else name), "unknown field"
    # msgspec writes dict values as `labels[...]` and list items as `items[3]`.
    field = re.sub(r"\[\.\.\.\]", "", field)
    field = re.sub(r"\[(\d+)\]", r".\1", field)
    return field or "body", message


# What msgspec says when a JSON number has no machine form (1e400, a 5,000-digit integer): the
# body is malformed rather than a value out of the field's range, so it is a 400 like bad syntax.
_UNREPRESENTABLE = ("Number out of range", "Integer value out of range")


def malformed(field: str, message: str) -> ProblemError:
    """The 400 problem of a body that is not usable JSON, naming where (``body`` when nowhere)."""
    return ProblemError(
        400,
        f"request body is not valid JSON: {field}: {message}",
        errors=[FieldError(field, message)],
        kind="malformed-request",
    )


def _not_utf8(body: bytes) -> ProblemError:
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        where = f"byte 0x{body[exc.start]:02x} at offset {exc.start}"
    else:  # pragma: no cover - msgspec found a bad sequence, so decode() does too
        where = "a byte sequence"
    return malformed("body", f"is not UTF-8 ({where}); JSON text must be UTF-8")


def strict_decode(body: bytes, kind: type[T]) -> T:
    """Decode a request body strictly into ``kind``, turning every way it can fail into a 4xx problem.

    Litestar's own pass coerces "30" into 30, which we refuse. MalformedError bodies (bad syntax,
    invalid UTF-8, numbers without a machine form, nesting deeper than the decoder goes) are 400;
    well-formed bodies with wrong values are 422. Both name the field, or ``body``.
    """
    try:
        decoded = msgspec.json.decode(body, type=kind, strict=True)
    except msgspec.ValidationError as exc:
        field, message = _field_from("", str(exc))
        if message.startswith(_UNREPRESENTABLE):
            raise malformed(field, f"{message}: the number has no 64-bit form") from None
        raise ProblemError(
            422, f"{field}: {message}", errors=[FieldError(field, message)], kind="invalid-request"
        ) from None
    except msgspec.DecodeError as exc:
        field, message = _field_from("", str(exc))
        raise malformed(field, message) from None
    except UnicodeDecodeError:
        # msgspec checks UTF-8 only inside strings it decodes, and reports it this way.
        raise _not_utf8(body) from None
    except RecursionError:
        raise malformed("body", "nests arrays or objects too deeply") from None
    # PostgreSQL text and jsonb cannot hold NUL, and JSON can only carry one as this escape.
    if b"\\u0000" in body:
        where = nul_field(msgspec.json.decode(body))
        if where is not None:
            raise invalid(where or "body", NUL_MESSAGE)
    return decoded


NUL_MESSAGE = "must not contain NUL (\\u0000) characters"


def nul_field(value: Any, path: str = "") -> str | None:
    """The path of the first string in a decoded JSON value that holds a NUL; None when none does.

    Walks with its own stack rather than by recursion: a payload may nest as deep as the decoder
    went, which is deeper than Python's recursion limit leaves room for here.
    """
    pending: list[tuple[str, Any]] = [(path, value)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where
            continue
        children: list[tuple[str, Any]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{where}.{key}" if where else str(key)
                if "\x00" in key:
                    return child_path
                children.append((child_path, child))
        elif isinstance(item, list):
            children = [
                (f"{where}.{index}" if where else str(index), child) for index, child in enumerate(item)
            ]
        pending.extend(reversed(children))
    return None


def on_problem(_: Request[Any, Any, Any], exc: ProblemError) -> Response[bytes]:
    """Answer a ProblemError raised by a handler."""
    return problem_response(exc.status, exc.detail, errors=exc.errors, kind=exc.kind, headers=exc.headers)


def problem_of(exc: OperationError) -> ProblemError:
    """An operation's refusal as the problem the API answers with."""
    return ProblemError(status_of(exc), exc.detail, errors=exc.errors, kind=exc.kind)


def on_operation_error(_: Request[Any, Any, Any], exc: OperationError) -> Response[bytes]:
    """Answer an operation's refusal (not found, conflict, invalid values ...) as a problem."""
    return problem_response(status_of(exc), exc.detail, errors=exc.errors, kind=exc.kind)


def on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    """Answer Litestar's decode and parameter errors: 400 for malformed JSON, 422 for bad values."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors: list[FieldError] = []
    for item in extra:
        if isinstance(item, dict):
            if item.get("key") == "data" and item.get("message") == "'data'":
                # Litestar's way of saying a route that takes a body got none.
                return problem_response(
                    400,
                    "request body is empty; send a JSON object",
                    errors=[FieldError("body", "is required: send a JSON object")],
                    kind="malformed-request",
                )
            field, message = _field_from(str(item.get("key", "")), str(item.get("message", "")))
            errors.append(FieldError(field, message))
    if not errors:
        detail = str(exc.detail)
        return problem_response(
            400,
            f"request body is not valid JSON: {detail}" if "JSON" in detail else detail,
            errors=[FieldError("body", detail)],
            kind="malformed-request",
        )
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return problem_response(422, detail, errors=errors, kind="invalid-request")


def on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Answer routing errors (404, 405, 413 ...) as problems."""
    status = exc.status_code
    detail = str(exc.detail) if exc.detail else HTTPStatus(status).phrase
    errors: list[FieldError] = []
    kind = None
    if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        limit = getattr(request.scope.get("route_handler"), "request_max_body_size", None)
        size = f"{limit // (1024 * 1024)} MiB" if isinstance(limit, int) and limit > 1024 * 1024 else "1 MiB"
        detail = f"request body is larger than {size}"
        errors = [FieldError("body", detail)]
    elif status == HTTPStatus.BAD_REQUEST and "JSON" in detail:
        errors = [FieldError("body", detail)]
        detail = f"request body is not valid JSON: {detail}"
        kind = "malformed-request"
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(status, detail, errors=errors, kind=kind, headers=headers)


def on_unhandled(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Log an unexpected error with its trace; the client gets a 500 problem without one."""
    log.error(
        "request_failed",
        path=request.url.path,
        method=request.method,
        request_id=request.scope.get(REQUEST_ID_KEY),
        exc_info=exc,
    )
    return problem_response(500, "internal error; the service logged the details")


# Seconds a client is asked to wait after a 503: a new connection is usually a moment away.
DATABASE_RETRY_AFTER_S = 1


def on_database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Answer 503 + Retry-After when the database cannot be reached, dropped the connection or is read-only.

    Never 500: a standby or a demoted primary (25006) is a lost server like one that hung up, and the
    pool has already dropped the connection that met it. A lost connection is marked on the scope: a
    read is then run once more on a fresh connection (see ObservabilityMiddleware) and the client
    never sees this answer. A write is not repeated, since the statement may have run before the
    connection died. A statement prepared before a migration changed its result columns
    (`StalePlan`) counts as a lost connection too: the pool closed the connection holding it.
    """
    waited_for_pool = isinstance(exc, PoolTimeout)
    read_only = isinstance(exc, ReadOnlySqlTransaction | ReadOnlyServer)
    if not waited_for_pool:
        request.scope[CONNECTION_LOST_KEY] = True  # type: ignore[literal-required]
    log.warning(
        "database_unavailable",
        path=request.url.path,
        method=request.method,
        request_id=request.scope.get(REQUEST_ID_KEY),
        error=f"{type(exc).__name__}: {exc}",
    )
    if waited_for_pool:
        detail = "no database connection became free in time"
    elif read_only:
        detail = "the database server is read-only (a standby or a demoted primary); waiting for a primary"
    elif str(exc).startswith("connection failed"):
        detail = "the database does not accept connections"
    elif isinstance(exc, StalePlan):
        detail = "a statement prepared before a schema change no longer fits its table; reconnected"
    else:
        detail = "the database connection was lost while answering"
    return problem_response(
        503,
        f"{detail}; retry after {DATABASE_RETRY_AFTER_S} s",
        kind="database-unavailable",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    psycopg.OperationalError: on_database_unavailable,
    psycopg.InterfaceError: on_database_unavailable,
    ReadOnlySqlTransaction: on_database_unavailable,
    ProblemError: on_problem,
    OperationError: on_operation_error,
    ValidationException: on_validation,
    HTTPException: on_http_exception,
    Exception: on_unhandled,
}

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBLEM_JSON",
    "PROBLEM_TYPE_BASE",
    "FieldError",
    "Problem",
    "ProblemError",
    "invalid",
    "nul_field",
    "problem_response",
    "problem_responses",
]
