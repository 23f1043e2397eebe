"""Named SQL from `sql/queries/*.sql`: the only place runtime code gets its statements from.

Each query in a file is headed by ``-- name: some_name`` and a comment saying why it is shaped the way
it is; parameters use psycopg's ``%(name)s`` form. Comment lines between the end of one statement
and the next ``-- name:`` (a section heading) belong to no query.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import msgspec

_NAME = re.compile(r"^--\s*name:\s*([a-z][a-z0-9_]*)\s*$")


class Query(msgspec.Struct, frozen=True):
    """One named statement, ready for ``cursor.execute``."""

    name: str
    sql: bytes
    doc: str


def sql_dir() -> Path:
    """Return the folder holding `migrations/` and `queries/`.

    A wheel carries it inside the package; a source checkout (editable install) has it at the top.
    """
    packaged = Path(__file__).parents[1] / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "sql"


def parse(text: str, source: str) -> dict[str, Query]:
    """Split one .sql file into its named queries."""
    found: dict[str, Query] = {}
    name: str | None = None
    doc: list[str] = []
    body: list[str] = []

    def flush() -> None:
        if name is None:
            return
        while body and (not body[-1].strip() or body[-1].lstrip().startswith("--")):
            body.pop()  # a section heading after the statement, not part of it
        statement = "\n".join(body).strip().rstrip(";").strip()
        if not statement:
            raise ValueError(f"{source}: query {name} has no statement")
        if name in found:
            raise ValueError(f"{source}: query {name} is defined twice")
        found[name] = Query(name=name, sql=statement.encode(), doc=" ".join(doc))

    for line in text.splitlines():
        match = _NAME.match(line)
        if match:
            flush()
            name, doc, body = match.group(1), [], []
        elif name is not None and not body and line.startswith("--"):
            doc.append(line.removeprefix("--").strip())
        elif name is not None:
            body.append(line)
    flush()
    return found


@cache
def all_queries() -> dict[str, Query]:
    """Load every named query once per process."""
    found: dict[str, Query] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, query in parse(path.read_text(encoding="utf-8"), path.name).items():
            if name in found:
                raise ValueError(f"{path.name}: query {name} is also defined in another file")
            found[name] = query
    return found


def q(name: str) -> bytes:
    """Return the statement of the named query."""
    return all_queries()[name].sql
