"""Rows are read by column name: every named query's result columns are the ones its row shape reads.

PostgreSQL itself says what each query returns: the statement is prepared and described on a fresh
migrated database, never run, so a column added to a SELECT list, or to a table behind a
`SELECT *`, fails here until the store maps it.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import pq

from scheduler.db import connections, rows, store
from scheduler.db.queries import all_queries
from scheduler.db.store import jobs as job_store
from scheduler.db.store import tenants as tenant_store
from scheduler.domain.models import (
    HttpAction,
    JobValues,
    Misfire,
    MisfirePolicy,
    OverlapPolicy,
    RetryPolicy,
    project,
)
from scheduler.ids import uuid7

_PLACEHOLDER = re.compile(rb"%\((\w+)\)[sb]")


def numbered(sql: bytes) -> bytes:
    """The %(name)s / %(name)b placeholders of psycopg as $1..$n, one number per name."""
    numbers: dict[bytes, int] = {}
    return _PLACEHOLDER.sub(lambda m: b"$%d" % numbers.setdefault(m.group(1), len(numbers) + 1), sql)


def result_columns(conn: psycopg.Connection, name: str, sql: bytes) -> list[str]:
    """The names of the columns ``sql`` returns, as the server describes the prepared statement."""
    # Parameter types are left to the server: every query casts the ones it cannot infer. The
    # extended protocol prepares utility statements too (LISTEN, SET LOCAL, CREATE TABLE): they
    # are described as returning no columns, so none needs skipping.
    prepared = conn.pgconn.prepare(name.encode(), numbered(sql))
    assert prepared.status == pq.ExecStatus.COMMAND_OK, (
        f"{name} does not prepare: {prepared.error_message.decode()}"
    )
    described = conn.pgconn.describe_prepared(name.encode())
    assert described.status == pq.ExecStatus.COMMAND_OK, described.error_message.decode()
    return [(described.fname(i) or b"").decode() for i in range(described.nfields)]


@pytest.fixture
def described(db_url) -> dict[str, list[str]]:
    """Every named query's result columns, by query name."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return {name: result_columns(conn, name, query.sql) for name, query in all_queries().items()}


class TestEveryQueryMatchesItsRowShape:
    """The store reads each query's result through one registered shape naming exactly its columns."""

    def test_a_query_that_returns_columns_is_read_as_a_shape_of_exactly_those_columns(self, described):
        mismatched = {}
        for name, columns in described.items():
            if not columns:
                continue
            shape = rows.ROW_SHAPES.get(name)
            if shape is None:
                mismatched[name] = f"returns {columns} but has no row shape"
                continue
            mapped = set(shape.columns) | set(shape.discarded)
            if mapped != set(columns):
                mismatched[name] = (
                    f"unmapped {sorted(set(columns) - mapped)}, missing {sorted(mapped - set(columns))}"
                )
        assert mismatched == {}

    def test_no_query_returns_a_column_name_twice(self, described):
        doubled = {
            name: [column for column, seen in Counter(columns).items() if seen > 1]
            for name, columns in described.items()
        }
        assert {name: columns for name, columns in doubled.items() if columns} == {}

    def test_no_shape_names_a_column_twice(self):
        doubled = {
            name: [column for column, seen in Counter((*shape.columns, *shape.discarded)).items() if seen > 1]
            for name, shape in rows.ROW_SHAPES.items()
        }
        assert {name: columns for name, columns in doubled.items() if columns} == {}

    def test_a_query_that_returns_nothing_has_no_row_shape(self, described):
        silent = {name for name, columns in described.items() if not columns}
        assert silent, "no statement without a result found: the description is broken"
        assert silent & set(rows.ROW_SHAPES) == set()

    def test_every_shaped_name_is_a_real_query(self):
        assert set(rows.ROW_SHAPES) - set(all_queries()) == set()


class TestRowsAreReadByName:
    """What a shape reads does not depend on where the columns stand, and a missing one is loud."""

    def test_the_claim_reads_its_columns_wherever_the_result_puts_them(self, db_url):
        with psycopg.connect(db_url, autocommit=True) as conn:
            connections._prepare(conn)
            listed = conn.execute(_CLAIM_ROW)
            shuffled = conn.execute(_CLAIM_ROW_SHUFFLED)
            in_order = job_store._DUE.maker("job_claim_due", listed.pgresult)(listed.fetchall()[0])
            out_of_order = job_store._DUE.maker("job_claim_due", shuffled.pgresult)(shuffled.fetchall()[0])
        assert out_of_order == in_order
        due, db_now = in_order.job, in_order.db_now
        assert (due.name, due.timeout_s, due.retry.max_backoff_s, due.misfire.policy) == (
            "nightly",
            7,
            60.0,
            MisfirePolicy.ALL,
        )
        assert db_now == datetime(2026, 3, 1, tzinfo=UTC)

    def test_a_result_without_a_column_the_shape_reads_fails_naming_the_query_and_the_column(self, db_url):
        with psycopg.connect(db_url, autocommit=True) as conn:
            cur = conn.execute(_CLAIM_ROW.replace(b", 7 AS timeout_s", b""))
            with pytest.raises(rows.RowShapeError, match=r"job_claim_due: .* no column 'timeout_s'"):
                job_store._DUE.maker("job_claim_due", cur.pgresult)

    def test_a_result_with_a_column_twice_fails_naming_it(self, db_url):
        with psycopg.connect(db_url, autocommit=True) as conn:
            cur = conn.execute(b"SELECT 1 AS jobs, 2 AS jobs")
            with pytest.raises(rows.RowShapeError, match=r"namespace_usage_add: .* column 'jobs' twice"):
                tenant_store._JOBS.maker("namespace_usage_add", cur.pgresult)

    def test_a_shape_refuses_a_query_it_is_not_registered_for(self):
        with pytest.raises(rows.RowShapeError, match="job_get is not read as"):
            job_store._DUE.factory("job_get")


class TestJobValuesRoundTrip:
    """What the store writes from a JobValues comes back as the same values."""

    async def test_a_job_written_with_every_value_set_reads_back_the_same(self, db_url):
        values = JobValues(
            id=uuid7(),
            namespace="tenant-a",
            name="every-field",
            description="all set",
            schedule="*/5 * * * *",
            timezone="Europe/Berlin",
            start_at=datetime(2030, 1, 1, tzinfo=UTC),
            end_at=datetime(2031, 1, 1, tzinfo=UTC),
            action=HttpAction(url="https://example.com/hook", method="PUT", headers={"X-A": "1"}, body=[1]),
            timeout_s=45,
            retry=RetryPolicy(max_attempts=5, min_backoff_s=2.5, max_backoff_s=90.0),
            misfire=Misfire(policy=MisfirePolicy.SKIP, grace_s=9, window_s=120),
            overlap=OverlapPolicy.REPLACE,
            paused=True,
            labels={"team": "core", "tier": "1"},
            next_run_at=datetime(2030, 1, 1, 0, 5, tzinfo=UTC),
            anchor_at=datetime(2030, 1, 1, tzinfo=UTC),
        )
        conn = await connections.connect(db_url, application_name="test-store-rows")
        async with conn:
            inserted = await store.job_insert(conn, values)
            changed = project(JobValues, values, description="changed", next_run_at=None)
            updated = await store.job_update(conn, changed)
        assert inserted is not None
        assert project(JobValues, inserted) == values
        assert (inserted.version, inserted.active_runs, inserted.last_run, inserted.pause_note) == (
            1,
            0,
            None,
            None,
        )
        assert updated is not None
        assert project(JobValues, updated) == changed
        assert updated.version == 2


# One claim row, built by hand: the claim's columns in its own order, and the same ones reversed.
_CLAIM_COLUMNS = [
    "'0195a6f0-0000-7000-8000-000000000001'::uuid AS id",
    "'default' AS namespace",
    "'nightly' AS name",
    "'0 3 * * *' AS schedule",
    "'UTC' AS timezone",
    "NULL::timestamptz AS start_at",
    "NULL::timestamptz AS end_at",
    "'2026-01-01T00:00:00Z'::timestamptz AS anchor_at",
    "'2026-03-01T03:00:00Z'::timestamptz AS next_run_at",
    """'{"type": "log", "payload": {}}'::jsonb AS action""",
    "7 AS timeout_s",
    "2 AS retry_max_attempts",
    "1.5::float8 AS retry_min_backoff_s",
    "60.0::float8 AS retry_max_backoff_s",
    "'all'::misfire_policy AS misfire_policy",
    "5 AS misfire_grace_s",
    "3600 AS misfire_window_s",
    "'skip'::overlap_policy AS overlap",
    "0 AS active_runs",
    "'[]'::jsonb AS schedules",
    "NULL::jsonb AS exclusions",
    "'2026-03-01T00:00:00Z'::timestamptz AS db_now",
]
_CLAIM_ROW = f"SELECT {', '.join(_CLAIM_COLUMNS)}".encode()
_CLAIM_ROW_SHUFFLED = f"SELECT {', '.join(reversed(_CLAIM_COLUMNS))}".encode()
