-- name: migration_lock
-- A session-level advisory lock: a second `scheduler migrate` waits here, then finds nothing to do.
SELECT pg_advisory_lock(7262019384)

-- name: migration_unlock
-- Released explicitly so a pooled or reused session never keeps it.
SELECT pg_advisory_unlock(7262019384)

-- name: migration_table_create
-- The ledger of applied migrations; created on first use so it needs no migration of its own.
CREATE TABLE IF NOT EXISTS scheduler_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: migration_applied_versions
-- Versions already applied, to skip them.
SELECT version FROM scheduler_migrations ORDER BY version

-- name: migration_record
-- Written in the same transaction as the migration itself, so a failed migration leaves no record.
INSERT INTO scheduler_migrations (version, name) VALUES (%(version)s, %(name)s)
