"""Jobs written straight into the table, any number in one statement, for tests and benchmarks.

Tests that need rows without going through the API (thousands of them for a query plan, a few
with a count to check) and the benchmarks (up to millions) share this one statement instead of
each spelling out every column of ``jobs``. It lives under tests/ and the benchmarks import it, as
they import tests/pgbouncer.py: `make bench` installs the test extra too, while `make test` never
installs the bench extra, so this direction needs nothing the suite does not already have.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg


@dataclass(frozen=True)
class Expr:
    """A column's value written as SQL and computed for each row.

    ``i`` is the row's number, 1 to ``count`` (the text may use ``%(count)s`` too); ``params`` are
    the named parameters the text uses (``%(name)s``; a literal ``%`` is written ``%%``), which
    other expressions may share.
    """

    sql: str
    params: dict[str, Any] = field(default_factory=dict)


class Statement(NamedTuple):
    """An SQL statement and its named parameters, ready for ``conn.execute`` or the ``sql`` fixture."""

    sql: str
    params: dict[str, Any]


# Each column's type, for the cast of a value bound as a parameter (an INSERT ... SELECT reads an
# untyped parameter as text, which a jsonb, enum or timestamp column would refuse), and its value
# when not given: a log job on an hourly schedule in UTC, named with the prefix and its number,
# that never comes due (``next_run_at`` NULL).
_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("uuid", "gen_random_uuid()"),
    "namespace": ("text", "'default'"),
    "name": ("text", "%(prefix)s || i"),
    "schedule": ("text", "'@hourly'"),
    "timezone": ("text", "'UTC'"),
    "anchor_at": ("timestamptz", "now()"),
    "action": ("jsonb", """'{"type": "log"}'"""),
    "timeout_s": ("integer", "30"),
    "retry_max_attempts": ("integer", "1"),
    "retry_min_backoff_s": ("double precision", "1"),
    "retry_max_backoff_s": ("double precision", "1"),
    "misfire_policy": ("misfire_policy", "'once'"),
    "misfire_grace_s": ("integer", "5"),
    "misfire_window_s": ("integer", "3600"),
    "overlap": ("overlap_policy", "'skip'"),
    "next_run_at": ("timestamptz", "NULL"),
    "labels": ("jsonb", "'{}'"),
}


def job_rows(count: int = 1, *, prefix: str = "job-", **columns: Any) -> Statement:
    """The INSERT of ``count`` jobs, every column not in ``columns`` at its default above.

    A plain value is bound as a parameter and is the same for every row (a dict or list is sent as
    JSON); an :class:`Expr` is written into the statement and computed per row. Unknown column
    names are refused.
    """
    unknown = sorted(set(columns) - set(_COLUMNS))
    if unknown:
        raise TypeError(f"jobs has no column {', '.join(unknown)}")
    params: dict[str, Any] = {"count": count, "prefix": prefix}
    values: list[str] = []
    for column, (sql_type, default) in _COLUMNS.items():
        if column not in columns:
            values.append(default)
            continue
        value = columns[column]
        if isinstance(value, Expr):
            # Two expressions may share a parameter (the same name for the same value).
            clash = sorted(
                name for name in value.params if name in params and params[name] != value.params[name]
            )
            if clash:
                raise ValueError(f"parameter {', '.join(clash)} of {column} is taken")
            params.update(value.params)
            values.append(value.sql)
            continue
        key = f"col_{column}"
        params[key] = json.dumps(value) if isinstance(value, dict | list) else value
        values.append(f"%({key})s::{sql_type}")
    text = (
        f"INSERT INTO jobs ({', '.join(_COLUMNS)})\n"
        f"SELECT {', '.join(values)}\n"
        "FROM generate_series(1, %(count)s) AS i"
    )
    return Statement(text, params)


def seed_jobs(conn: psycopg.Connection[Any], count: int = 1, *, prefix: str = "job-", **columns: Any) -> None:
    """Insert ``count`` jobs on ``conn`` (see :func:`job_rows` for the columns)."""
    statement = job_rows(count, prefix=prefix, **columns)
    conn.execute(statement.sql.encode(), statement.params)
