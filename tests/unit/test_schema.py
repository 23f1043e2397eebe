"""Named queries and migration files, read as files: every name exists, each in its store module.

SQL lives in sql/queries and runtime code names it; these checks read the files and src/ only. The
migrations applied and every query prepared on a real PostgreSQL: tests/integration/test_schema.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from scheduler.db.queries import all_queries, parse
from tests.conftest import ROOT

_TAKES_QUERY = {"q", "execute", "fetch_one", "fetch_all"}
QUERY_FILES = ROOT / "sql" / "queries"
STORE = ROOT / "src" / "scheduler" / "db" / "store"


def names_used(path: Path) -> set[str]:
    """The query names a module runs.

    As q("name"), or the store's execute(conn, "name") and fetch_one/fetch_all(conn, shape, "name").
    """
    used: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _TAKES_QUERY:
            literal = next(
                (a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)),
                None,
            )
            if literal is not None:
                used.add(literal)
    return used


class TestNamedQueries:
    """SQL lives in sql/queries; runtime code refers to it by name only."""

    def test_every_query_name_used_in_src_exists(self):
        names = set(all_queries())
        used: set[str] = set()
        for path in (ROOT / "src").rglob("*.py"):
            used |= names_used(path)
        assert used, "no query use found: the scan is broken"
        assert used - names == set()
        assert names - used == set(), "queries nobody uses"

    def test_each_query_is_run_by_the_store_module_of_its_file(self):
        files = {path.stem: set(parse(path.read_text(), path.name)) for path in QUERY_FILES.glob("*.sql")}
        modules = {path.stem: path for path in STORE.glob("*.py") if path.stem != "__init__"}
        assert set(modules) == set(files), "one store module per sql/queries file"
        misplaced = {}
        for path in (ROOT / "src").rglob("*.py"):
            used = names_used(path)
            home = files.get(path.stem, set()) if path.parent == STORE else set()
            if used - home:
                misplaced[str(path.relative_to(ROOT))] = sorted(used - home)
        assert misplaced == {}, "queries run outside the store module of their .sql file"
        unused = {stem: sorted(names - names_used(modules[stem])) for stem, names in files.items()}
        assert {stem: names for stem, names in unused.items() if names} == {}

    def test_unfinished_runs_are_named_not_spelled_out(self):
        spelled = re.compile(r"'(pending|running)'\s*,\s*'(pending|running)'")
        offenders = [
            f"{path.name}: {name}"
            for path in QUERY_FILES.glob("*.sql")
            for name, query in parse(path.read_text(), path.name).items()
            if spelled.search(query.sql.decode())
        ]
        assert offenders == [], "write run_status_unfinished(status) (migration 0006)"

    def test_src_holds_no_sql_literals(self):
        statement = re.compile(r"^\s*(SELECT|INSERT INTO|UPDATE|DELETE FROM|WITH|CREATE|LISTEN|SET)\s")
        offenders: list[str] = []
        for path in (ROOT / "src").rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
                    text = node.value.decode(errors="ignore") if isinstance(node.value, bytes) else node.value
                    if statement.match(text):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        assert offenders == []

    def test_parser_rejects_duplicates_and_empty_queries(self):
        assert parse("-- name: a\n-- why\nSELECT 1\n", "x.sql")["a"].sql == b"SELECT 1"
        # A heading between two queries belongs to neither; a comment inside a statement stays.
        sections = (
            "-- the file\n-- name: a\n-- why\nSELECT 1\n  -- inside\n  + 1\n\n"
            "-- ==== next\n\n-- name: b\n-- why\nSELECT 2\n"
        )
        assert {n: q.sql for n, q in parse(sections, "x.sql").items()} == {
            "a": b"SELECT 1\n  -- inside\n  + 1",
            "b": b"SELECT 2",
        }
        for text in ["-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n", "-- name: a\n-- only a comment\n"]:
            try:
                parse(text, "x.sql")
            except ValueError:
                continue
            raise AssertionError(f"accepted {text!r}")


def test_migration_files_are_numbered_in_order():
    files = sorted(p.name for p in (ROOT / "sql" / "migrations").glob("*.sql"))
    numbers = [int(name[:4]) for name in files]
    assert numbers == list(range(1, len(files) + 1))
    assert all(Path(ROOT / "sql" / "migrations" / f).read_text().strip() for f in files)
