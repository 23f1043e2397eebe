-- The ledger of applied migrations; `scheduler migrate` runs these before any other statement.

-- name: migration_lock
-- Held to the end of the caller's transaction, not the session's: a transaction pooler (PgBouncer)
-- keeps one server connection for a whole transaction, never for a session. A second `scheduler
-- migrate` waits here, then finds the migration applied.
SELECT pg_advisory_xact_lock(7262019384)

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
