"""Apply `sql/migrations/NNNN_name.sql` in order, each once, under a transaction-scoped advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import structlog

from scheduler.db import connections, store
from scheduler.db.queries import sql_dir

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
log = structlog.get_logger("scheduler.db.migrate")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path


def available() -> list[Migration]:
    """Return the migrations shipped with the code, in version order."""
    found: list[Migration] = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migration files share a version number")
    return found


def migrate(url: str, *, pooler: connections.Pooler = "none") -> list[int]:
    """Apply every pending migration; return the versions applied now (empty when up to date).

    Each migration runs in one transaction with its ledger row, under an advisory lock that ends
    with that transaction. So concurrent calls (several containers starting at once) are safe — the
    later ones wait, then find the migration applied — and so is PgBouncer in transaction mode,
    which keeps one server connection for a transaction but not for a session.
    """
    applied_now: list[int] = []
    with connections.connect_sync(url, application_name="scheduler-migrate", pooler=pooler) as conn:
        with conn.transaction():
            store.migration_lock(conn)
            store.migration_table_create(conn)
        for migration in available():
            with conn.transaction():
                store.migration_lock(conn)
                if migration.version in store.migration_applied_versions(conn):
                    continue
                conn.execute(migration.path.read_bytes())
                store.migration_record(conn, version=migration.version, name=migration.name)
            applied_now.append(migration.version)
            log.info("migration_applied", version=migration.version, migration=migration.name)
    return applied_now
