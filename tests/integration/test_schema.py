"""Migrations and named queries on a real PostgreSQL: applied once each, safe concurrently, all prepare.

What can be checked by reading the files (every name exists, each in its store module, migrations
numbered in order): tests/unit/test_schema.py.
"""

from __future__ import annotations

import re
import threading

import psycopg
import pytest

from scheduler.db.migrate import available, migrate
from scheduler.db.queries import all_queries
from tests.conftest import url_for
from tests.seed import job_rows


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

    def test_job_counts_of_unfinished_runs_that_drifted_are_made_exact(self, sql):
        seed_jobs(sql, ["exact", "over", "under"])
        for name, status in [("exact", "running"), ("over", "succeeded"), ("under", "pending")]:
            seed_run(sql, name, status)
        # What the clamped statements could leave: a count above its runs, and one below them.
        sql("UPDATE jobs SET active_runs = CASE name WHEN 'exact' THEN 1 WHEN 'over' THEN 2 ELSE 0 END")
        migration = next(m for m in available() if m.name == "unfinished_runs")
        sql(migration.path.read_text())
        assert sql("SELECT name, active_runs FROM jobs ORDER BY name") == [
            ("exact", 1),
            ("over", 0),
            ("under", 1),
        ]

    def test_a_count_of_unfinished_runs_below_zero_is_refused(self, sql):
        seed_jobs(sql, ["counted"])
        with pytest.raises(psycopg.errors.CheckViolation, match="jobs_active_runs_check"):
            sql("UPDATE jobs SET active_runs = active_runs - 1")

    def test_runs_dropped_with_their_partition_leave_their_jobs_counts(self, sql):
        seed_jobs(sql, ["old"])
        seed_run(sql, "old", "pending", days_ago=40)  # in runs_default: before every partition
        seed_run(sql, "old", "running", days_ago=6)
        seed_run(sql, "old", "succeeded", days_ago=6)
        sql("UPDATE jobs SET active_runs = 2")
        dropped = sql("SELECT run_partitions_drop_before((now() AT TIME ZONE 'UTC')::date - 2)")[0][0]
        assert dropped >= 1
        assert sql("SELECT active_runs, (SELECT count(*) FROM runs) FROM jobs") == [(0, 0)]

    def test_runs_are_partitioned_by_day_ahead_of_time(self, sql):
        parts = [
            row[0]
            for row in sql(
                "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'runs'::regclass"
            )
        ]
        assert "runs_default" in parts
        assert len([p for p in parts if re.fullmatch(r"runs_\d{8}", p)]) >= 14


def seed_jobs(sql, names: list[str]) -> None:
    """Jobs that never fire, named ``names``."""
    for name in names:
        sql(*job_rows(name=name))


def seed_run(sql, job: str, status: str, *, days_ago: int = 0) -> None:
    """One run of the named job, slotted ``days_ago`` days back."""
    sql(
        "INSERT INTO runs (id, job_id, scheduled_for, trigger, attempt, status)"
        " SELECT gen_random_uuid(), id, now() - make_interval(days => %s), 'schedule', 1, %s::run_status"
        " FROM jobs WHERE name = %s",
        (days_ago, status, job),
    )


class TestNamedQueries:
    """SQL lives in sql/queries; runtime code refers to it by name only."""

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
