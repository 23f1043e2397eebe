"""The queries of `sql/queries/migrations.sql`: the ledger `scheduler.db.migrate` keeps.

Blocking: `scheduler migrate` runs before any event loop, on a connection of its own.
"""

from __future__ import annotations

from scheduler.db.connections import SyncConn
from scheduler.db.queries import q
from scheduler.db.rows import column, unread

unread("pg_advisory_xact_lock", queries=("migration_lock",))
_VERSION = column("version", int, "migration_applied_versions")


def migration_lock(conn: SyncConn) -> None:
    """Wait for the migration lock, held until the caller's transaction ends."""
    conn.execute(q("migration_lock"))


def migration_table_create(conn: SyncConn) -> None:
    """Create the ledger of applied migrations if it is not there yet."""
    conn.execute(q("migration_table_create"))


def migration_applied_versions(conn: SyncConn) -> set[int]:
    """The versions of the migrations applied so far."""
    with conn.cursor(row_factory=_VERSION.factory("migration_applied_versions")) as cur:
        cur.execute(q("migration_applied_versions"))
        return set(cur.fetchall())


def migration_record(conn: SyncConn, *, version: int, name: str) -> None:
    """Note a migration as applied (in the migration's own transaction)."""
    conn.execute(q("migration_record"), {"version": version, "name": name})
