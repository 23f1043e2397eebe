"""Migrations and named queries: applied once each, safe when run concurrently, every name exists."""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path

import psycopg

from scheduler.db.migrate import available, migrate
from scheduler.db.queries import all_queries, parse
from tests.conftest import ROOT, url_for


class TestMigrations:
    """`scheduler migrate` applies each file once, in order, under an advisory lock."""

    def test_concurrent_migrate_calls_apply_each_migration_once(self, server_url):
        name = "sched_migrate_race"
        with psycopg.connect(url_for(server_url, "postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        url = url_for(server_url, name)
        results: list[list[int]] = []
        errors: list[BaseException] = []

        def call() -> None:
            try:
                results.append(migrate(url))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            assert errors == []
            versions = [m.version for m in available()]
            assert sorted(v for applied in results for v in applied) == versions  # each exactly once
            with psycopg.connect(url) as conn:
                ledger = [
                    row[0] for row in conn.execute("SELECT version FROM scheduler_migrations ORDER BY 1")
                ]
            assert ledger == versions
            assert migrate(url) == []
        finally:
            with psycopg.connect(url_for(server_url, "postgres"), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def test_stored_schedules_spaced_with_other_whitespace_are_respelled_to_keep_firing(
        self, client, sql
    ):
        spellings = {"0\u00a00 * * *": "0 0 * * *", "*/5 * * * *\n": "*/5 * * * *", "@hourly": "@hourly"}
        for number, spelled in enumerate(spellings):
            body = {"name": f"job-{number}", "schedule": "@hourly", "action": {"type": "log"}}
            assert (await client.post("/jobs", json=body)).status_code == 201
            # What an earlier version stored when it read these characters as spaces.
            sql("UPDATE jobs SET schedule = %s WHERE name = %s", (spelled, f"job-{number}"))
        migration = next(m for m in available() if m.name == "schedule_spacing")
        sql(migration.path.read_text())
        stored = [row[0] for row in sql("SELECT schedule FROM jobs ORDER BY name")]
        assert stored == list(spellings.values())

    def test_runs_are_partitioned_by_day_ahead_of_time(self, sql):
        parts = [
            row[0]
            for row in sql(
                "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'runs'::regclass"
            )
        ]
        assert "runs_default" in parts
        assert len([p for p in parts if re.fullmatch(r"runs_\d{8}", p)]) >= 14


_TAKES_QUERY = {"q", "execute", "fetch_one", "fetch_all"}


class TestNamedQueries:
    """SQL lives in sql/queries; runtime code refers to it by name only."""

    def test_every_query_name_used_in_src_exists(self):
        names = set(all_queries())
        used: set[str] = set()
        for path in (ROOT / "src").rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                # q("name"), or the store's execute(conn, "name"), fetch_one/fetch_all(conn, shape, "name").
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in _TAKES_QUERY
                ):
                    literal = next(
                        (
                            a.value
                            for a in node.args
                            if isinstance(a, ast.Constant) and isinstance(a.value, str)
                        ),
                        None,
                    )
                    if literal is not None:
                        used.add(literal)
        assert used, "no query use found: the scan is broken"
        assert used - names == set()
        assert names - used == set(), "queries nobody uses"

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

    def test_every_query_is_documented_and_prepares(self, sql):
        for name, query in all_queries().items():
            assert query.doc, f"{name} has no comment saying why it is shaped that way"
            if (
                not query.sql.lstrip()
                .upper()
                .startswith((b"SELECT", b"INSERT", b"UPDATE", b"DELETE", b"WITH"))
            ):
                continue
            text = re.sub(rb"%\((\w+)\)[sb]", b"NULL", query.sql)
            sql(f"PREPARE check_{name} AS {text.decode()}")
            sql(f"DEALLOCATE check_{name}")

    def test_parser_rejects_duplicates_and_empty_queries(self):
        assert parse("-- name: a\n-- why\nSELECT 1\n", "x.sql")["a"].sql == b"SELECT 1"
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
