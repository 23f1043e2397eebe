"""The checks of a job's values that their types cannot express: URLs, headers, bodies, instants, labels.

Each returns every problem it finds as a FieldError naming the field, so a request that is wrong in
three places hears of all three at once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from scheduler.domain import names
from scheduler.domain.models import Action, HttpAction, JobValues, Notify, RetryPolicy


class FieldError(msgspec.Struct):
    """One thing wrong with a request, and where."""

    field: str
    message: str


MAX_ACTION_BODY = 256 * 1024
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
# RFC 9110 field-value limited to what the runner can send: visible ASCII, with spaces and tabs
# only between visible characters (no other control characters, no bytes above 0x7E).
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20\x09\x21-\x7e]*[\x21-\x7e])?)?")
HEADER_VALUE_MESSAGE = "value must be visible ASCII (0x21-0x7E), with spaces or tabs only between characters"
# Headers the runner sets itself, or that would let a job smuggle a second request.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
_SUCCESS_CODES = re.compile(r"^\s*([1-5](?:xx|\d\d))\s*(?:,\s*([1-5](?:xx|\d\d))\s*)*$")


def _check_url(url: str, field: str = "action.url") -> list[FieldError]:
    """The problems of a URL the runners will call: an HTTP action's, or a job's notify.url."""
    errors: list[FieldError] = []
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced IPv6 bracket, for one
        return [FieldError(field, f"is not a URL ({exc})")]
    if parts.scheme not in ("http", "https"):
        errors.append(FieldError(field, "must be an http:// or https:// URL"))
    elif not parts.hostname:
        errors.append(FieldError(field, "has no host"))
    elif parts.username or parts.password:
        hint = "; use action.headers" if field == "action.url" else ""
        errors.append(FieldError(field, f"must not carry credentials{hint}"))
    else:
        try:
            _ = parts.port
        except ValueError:
            errors.append(FieldError(field, "has an invalid port"))
    if any(ch in url for ch in " \r\n\t"):
        errors.append(FieldError(field, "must not contain whitespace"))
    return errors


# Deepest nesting a payload or body may have: runners decode and log these with recursive code at
# a deeper stack than the API's, so a value the API could just decode must not reach them.
MAX_NESTING = 64


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` levels (walked without recursion)."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def check_action(action: Action) -> list[FieldError]:
    """Return what is wrong with an action beyond its types."""
    if not isinstance(action, HttpAction):
        if _nests_deeper(action.payload, MAX_NESTING):
            return [FieldError("action.payload", f"nests deeper than {MAX_NESTING} levels")]
        return []
    errors = _check_url(action.url)
    if _nests_deeper(action.body, MAX_NESTING):
        errors.append(FieldError("action.body", f"nests deeper than {MAX_NESTING} levels"))
    for name, value in action.headers.items():
        if not _HEADER_NAME.fullmatch(name):
            errors.append(FieldError(f"action.headers.{name}", "is not a valid header name"))
        elif name.lower() in _RESERVED_HEADERS or name.lower().startswith("webhook-"):
            errors.append(
                FieldError(f"action.headers.{name}", "is set by the scheduler and cannot be overridden")
            )
        if len(value) > 8192:  # noqa: PLR2004
            errors.append(FieldError(f"action.headers.{name}", "value must be at most 8192 characters"))
        elif not _HEADER_VALUE.fullmatch(value):  # fullmatch: `$` would let a final newline by
            errors.append(FieldError(f"action.headers.{name}", HEADER_VALUE_MESSAGE))
    if action.body is not None:
        encoded = action.body.encode() if isinstance(action.body, str) else msgspec.json.encode(action.body)
        if len(encoded) > MAX_ACTION_BODY:
            errors.append(FieldError("action.body", f"is {len(encoded)} bytes; the limit is 256 KiB"))
    if not _SUCCESS_CODES.match(action.success_codes):
        errors.append(
            FieldError("action.success_codes", "must list codes or classes, like 2xx or 200,202,3xx")
        )
    if action.method in ("GET", "HEAD") and action.body is not None:
        errors.append(FieldError("action.body", f"a {action.method} request carries no body"))
    return errors


# Instants a job or a preview may name: beyond them, the date arithmetic of fire times and the
# database's round trip of timestamps (year 1 with an offset is year 0 in UTC) break down.
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)


def check_instant(field: str, value: datetime | None) -> list[FieldError]:
    """Return the error of an instant outside the years the scheduler works with."""
    if value is None or EARLIEST_INSTANT <= value < LATEST_INSTANT:
        return []
    return [FieldError(field, "must lie between 1970-01-01 and 9000-01-01")]


def check_policies(retry: RetryPolicy, labels: dict[str, str]) -> list[FieldError]:
    """Return what is wrong with the retry policy and labels beyond their types."""
    errors: list[FieldError] = []
    if retry.min_backoff_s > retry.max_backoff_s:
        errors.append(FieldError("retry.min_backoff_s", "must not exceed retry.max_backoff_s"))
    errors.extend(FieldError(field, message) for field, message in names.label_problems(labels))
    return errors


def check_notify(notify: Notify | None) -> list[FieldError]:
    """Return what is wrong with a job's notify beyond its types (its URL follows the actions' rules)."""
    if notify is None:
        return []
    if notify.url is None and notify.pause_after is None:
        return [FieldError("notify", "names neither url nor pause_after; send null for no notifications")]
    errors = [] if notify.url is None else _check_url(notify.url, "notify.url")
    if notify.url is not None and notify.pause_after is not None and notify.pause_after < notify.after:
        errors.append(
            FieldError(
                "notify.pause_after",
                f"must be at least notify.after ({notify.after}), or the job pauses before it is reported",
            )
        )
    return errors


def check_job(values: JobValues) -> list[FieldError]:
    """Every field of a job's values that is wrong beyond its type (the timing is checked apart)."""
    errors = (
        check_instant("start_at", values.start_at)
        + check_instant("end_at", values.end_at)
        + check_action(values.action)
        + check_policies(values.retry, values.labels)
        + check_notify(values.notify)
    )
    for index, entry in enumerate(values.schedules):
        errors += check_instant(f"schedules[{index}].start_at", entry.start_at)
        errors += check_instant(f"schedules[{index}].end_at", entry.end_at)
    if not names.is_job_name(values.name):
        errors.append(FieldError("name", names.JOB_NAME_RULE))
    return errors
