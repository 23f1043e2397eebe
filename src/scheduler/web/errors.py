"""The HTTP status of each refusal an operation makes: the API's problems and the console's pages agree."""

from __future__ import annotations

from scheduler.operations.errors import (
    ConflictError,
    MalformedError,
    NotFoundError,
    OperationError,
    PreconditionFailedError,
)


def status_of(exc: OperationError) -> int:
    """The HTTP status of an operation's refusal: 400, 404, 409, 412, else 422 (invalid values, quota)."""
    if isinstance(exc, MalformedError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, PreconditionFailedError):
        return 412
    return 422
