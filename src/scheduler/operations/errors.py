"""What an operation refuses, said once; the API and the console each say it their own way.

Nothing has been written when one is raised: the caller's transaction rolls back.
"""

from __future__ import annotations

from typing import ClassVar

from scheduler.domain.validation import FieldError


class OperationError(Exception):
    """An operation refused; ``kind`` names the refusal for machines, ``detail`` for people."""

    kind: ClassVar[str]

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        """Describe the refusal; ``errors`` names each field that is wrong."""
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class NotFoundError(OperationError):
    """No such job or run in the caller's namespace."""

    kind = "not-found"


class ConflictError(OperationError):
    """The request conflicts with the resource's current state (a name taken, a run finished)."""

    kind = "conflict"


class InvalidError(OperationError):
    """Values that are wrong, each named in ``errors``."""

    kind = "invalid-request"

    @classmethod
    def of(cls, errors: list[FieldError]) -> InvalidError:
        """The refusal of every error in ``errors``, in one detail line."""
        return cls("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)

    @classmethod
    def field(cls, field: str, message: str) -> InvalidError:
        """The refusal of one bad field."""
        return cls.of([FieldError(field, message)])


class MalformedError(InvalidError):
    """A request the operation cannot read at all: a cursor it never gave out, an unusable filter."""


class PreconditionFailedError(OperationError):
    """The caller's precondition (an ETag in If-Match) no longer holds."""

    kind = "precondition-failed"


class QuotaExceededError(OperationError):
    """The namespace holds as many jobs as its quota allows."""

    kind = "quota-exceeded"


def job_not_found(job_id: object) -> NotFoundError:
    """The refusal for a job that is not in the caller's namespace."""
    return NotFoundError(f"job {job_id} not found")


def run_not_found(run_id: object) -> NotFoundError:
    """The refusal for a run that is not in the caller's namespace."""
    return NotFoundError(f"run {run_id} not found")
