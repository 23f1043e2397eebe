"""Query strings that never guess: a parameter a route does not take, or one given twice, is a 400.

A misspelt filter (`?stauts=failed`) or one a route lacks (`?name=` on `GET /jobs`) used to be
ignored, answering every item as if nothing had been asked; a repeated one kept its last value.
Both now answer 400 naming the parameter and what the route does take. A list is written once,
comma-separated (`?status=failed,timed_out`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from litestar import Request
from litestar.handlers import BaseRouteHandler

from scheduler.api.problems import NUL_MESSAGE, invalid
from scheduler.domain.names import parse_label

# Parameters of a handler that are not read from the query string.
_NOT_QUERY = frozenset({"self", "request", "data", "state", "scope", "headers", "cookies", "socket", "body"})


@cache
def _query_names(handler: BaseRouteHandler) -> frozenset[str]:
    return frozenset(handler.parsed_fn_signature.parameters) - _NOT_QUERY


async def refuse_unknown_query(request: Request[Any, Any, Any]) -> None:
    """Answer 400 for a query parameter the route does not take, one given twice, or one holding NUL."""
    if not request.scope["query_string"]:
        return  # most requests send none: parsing an empty query string is all this would cost
    params = request.query_params
    if not params:
        return
    taken = _query_names(request.route_handler) - request.path_params.keys()
    for key in params:
        if key not in taken:
            named = ", ".join(sorted(taken)) or "none"
            raise invalid(
                key,
                f"is not a parameter of {request.method} {request.url.path} (it takes: {named})",
                status=400,
            )
        values = params.getall(key)
        if any("\x00" in value for value in values):
            raise invalid(key, NUL_MESSAGE, status=400)
        given = len(values)
        if given > 1:
            raise invalid(
                key, f"is given {given} times; give it once (a list is one comma-separated value)", status=400
            )


def label_filter(label: str | None) -> dict[str, str]:
    """The labels a `label` filter asks for (`key=value`), or none; 400 naming `label` when unreadable."""
    if label is None:
        return {}
    try:
        key, value = parse_label(label)
    except ValueError as exc:
        raise invalid("label", str(exc), status=400) from None
    return {key: value}


STATUS_LIST = "One run status or a comma-separated list of them, e.g. `failed,timed_out`."


INSTANT = (
    "An RFC 3339 time with an offset (`2026-11-23T08:00:00Z`), or a time before now: a minus sign and"
    " a duration in s, m, h or d (`-15m`, `-1h30m`, `-7d`)."
)
_AGO = re.compile(r"-((?:\d+[smhd])+)")
_AGO_PART = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def instant_of(field: str, text: str | None, now: datetime) -> datetime | None:
    """The instant a time filter names: RFC 3339 with an offset, or ``now`` minus a duration (`-1h`)."""
    if text is None:
        return None
    if ago := _AGO.fullmatch(text.strip()):
        seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _AGO_PART.findall(ago.group(1)))
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            raise invalid(field, "reaches back before the year 1", status=400) from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise invalid(field, f"{text!r} is not a time: write {INSTANT[0].lower()}{INSTANT[1:]}", status=400)
    return moment
