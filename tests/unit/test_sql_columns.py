"""Every named query names the columns it returns: no `SELECT *`, `RETURNING *` or `alias.*`.

Why: psycopg prepares a statement on a connection once it has run there five times, and PostgreSQL
fixes a prepared statement's result columns when it is planned. A `*` over a table expands to the
table's columns of that moment, so once a migration adds a column (or changes one's type), every
statement prepared over that `*` fails on every connection that holds it, with FeatureNotSupported
"cached plan must not change result type". During a rolling upgrade the release still running is
the one whose statements break: a `*` in this tree makes the NEXT release's migrations break THIS
release. Naming the columns keeps the result of a statement what it was, whatever is added.

The check reads the SQL text (comments and string literals removed) rather than parsing it, so it
is deliberately simple and strict:

- a `*` whose previous word is SELECT, RETURNING, DISTINCT (or DISTINCT ON (...)), ALL, or a comma
  is a `*` of a select or RETURNING list, and is refused wherever it is, in a CTE or not;
- an `alias.*` is refused wherever it is (telling a table's alias from a CTE's needs a parser);
- allowed: a `*` inside parentheses after a function name (``count(*)``), multiplication, and
  ``SELECT * FROM unnest(...)`` / ``SELECT * FROM (VALUES ...)``, whose columns the query itself
  fixes (the parameters' types and the alias list), so no migration can change them.

tests/acceptance/test_upgrade.py uses `star_queries` on the previous release's SQL to know whether
its API may still meet that error right after this tree's migrations.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scheduler.db.queries import all_queries, parse, sql_dir

# Comments, string literals and quoted identifiers, in one pass so that one never starts inside
# another ('--' in a string, a quote in a comment).
_HIDDEN = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", re.DOTALL)
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\s*\.\s*\*|[A-Za-z_][A-Za-z0-9_$]*|\d+(?:\.\d+)?|\S")
_ALIAS_STAR = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\s*\.\s*\*")
_LIST_START = {"select", "returning", "distinct", "all", ","}


def _hide(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith("'"):
        return "''"
    if text.startswith('"'):
        return "quoted_identifier"
    return " "


def _tokens(sql: str) -> list[str]:
    return _TOKEN.findall(_HIDDEN.sub(_hide, sql))


def _opening(tokens: list[str], closing: int) -> int:
    """The index of the ``(`` that the ``)`` at ``closing`` closes (-1 when unbalanced)."""
    depth = 0
    for at in range(closing, -1, -1):
        if tokens[at] == ")":
            depth += 1
        elif tokens[at] == "(":
            depth -= 1
            if depth == 0:
                return at
    return -1


def _starts_list(tokens: list[str], at: int) -> bool:
    """Whether the `*` at ``at`` stands in a select or RETURNING list (not count(*), not a product)."""
    if at == 0:
        return False
    before = tokens[at - 1].lower()
    if before in _LIST_START:
        return True
    if before == ")":  # DISTINCT ON (...) *
        opening = _opening(tokens, at - 1)
        return opening >= 2 and [t.lower() for t in tokens[opening - 2 : opening]] == ["distinct", "on"]
    return False


def _fixed_shape(tokens: list[str], at: int) -> bool:
    """Whether the `*` at ``at`` is ``* FROM unnest(`` or ``* FROM (VALUES``: columns the query fixes."""
    after = [t.lower() for t in tokens[at + 1 : at + 4]]
    return after in (["from", "unnest", "("], ["from", "(", "values"])


def stars(sql: str) -> list[str]:
    """The refused `*`s of one statement, each as the few words around it (empty when none)."""
    tokens = _tokens(sql)
    found: list[str] = []
    for at, word in enumerate(tokens):
        refused = bool(_ALIAS_STAR.fullmatch(word)) or (
            word == "*" and _starts_list(tokens, at) and not _fixed_shape(tokens, at)
        )
        if refused:
            found.append(" ".join(tokens[max(0, at - 3) : at + 4]))
    return found


def star_queries(queries_dir: Path) -> dict[str, list[str]]:
    """The named queries of the `.sql` files in ``queries_dir`` that return a `*`, with where."""
    found: dict[str, list[str]] = {}
    for path in sorted(queries_dir.glob("*.sql")):
        for name, query in parse(path.read_text(encoding="utf-8"), path.name).items():
            if where := stars(query.sql.decode()):
                found[f"{path.name}:{name}"] = where
    return found


class TestNoQueryReturnsAStar:
    """The shipped queries name their columns, so adding a column never breaks a running release."""

    def test_no_named_query_selects_or_returns_a_star(self):
        assert all_queries(), "no queries found: the check would pass on nothing"
        assert star_queries(sql_dir() / "queries") == {}, (
            "name the columns instead of `*` (see this module's docstring for why)"
        )


REFUSED = [
    "SELECT * FROM jobs WHERE id = %(id)s",
    "select *\nfrom jobs",
    "SELECT j.* FROM jobs j",
    "SELECT j . * FROM jobs j",
    "SELECT id, * FROM jobs",
    "SELECT DISTINCT * FROM jobs",
    "SELECT DISTINCT ON (namespace) * FROM jobs ORDER BY namespace",
    "UPDATE jobs SET paused = true WHERE id = %(id)s RETURNING *",
    "WITH c AS (INSERT INTO jobs (id) VALUES (%(id)s) RETURNING *) SELECT id FROM c",
    "WITH c AS (DELETE FROM runs RETURNING id) SELECT c.* FROM c",
    "SELECT id FROM jobs WHERE EXISTS (SELECT * FROM runs)",
    "SELECT ALL * FROM jobs",
    "SELECT * FROM unnested_table",
    'SELECT "j".* FROM jobs "j"',
]

ALLOWED = [
    "SELECT count(*) AS total, count(*) FILTER (WHERE paused) AS paused FROM jobs",
    "SELECT (extract(epoch FROM now() - started_at) * 1000)::integer FROM runs",
    "SELECT id, 2 * attempt FROM runs",
    "SELECT id FROM jobs -- not SELECT * FROM jobs\n",
    "SELECT id FROM jobs /* RETURNING * */",
    "SELECT format('%%s * %%s', 'SELECT *', id) FROM jobs",
    "WITH o AS (SELECT * FROM unnest(%(ids)b::uuid[]) AS u(id)) SELECT id FROM o",
    "WITH v AS (SELECT * FROM (VALUES (1), (2)) AS v(n)) SELECT n FROM v",
    "SELECT id FROM jobs WHERE name = 'it''s RETURNING *'",
]


class TestTheCheckItself:
    """The text check refuses each kind of `*` that returns a table's columns, and nothing else."""

    @pytest.mark.parametrize("sql", REFUSED)
    def test_a_star_of_a_table_is_refused(self, sql):
        assert stars(sql), sql

    @pytest.mark.parametrize("sql", ALLOWED)
    def test_count_products_comments_literals_and_fixed_shapes_pass(self, sql):
        assert stars(sql) == [], sql

    def test_a_file_with_one_star_query_is_named_with_its_query(self, tmp_path):
        (tmp_path / "things.sql").write_text(
            "-- name: thing_get\n-- Why.\nSELECT * FROM things\n\n"
            "-- name: thing_count\n-- Why.\nSELECT count(*) AS n FROM things\n",
            encoding="utf-8",
        )
        assert star_queries(tmp_path) == {"things.sql:thing_get": ["SELECT * FROM things"]}
