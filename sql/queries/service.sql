-- The service as a whole: readiness, the runners' channels, partition upkeep, the console's secret.

-- ========================================================================= readiness and channels

-- name: health_check
-- Readiness: the server answers and takes writes (a standby or a read-only primary is not ready).
SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off' AS writable

-- name: listen_wake
-- Runners sleep until the earliest slot; the API notifies this channel when a job becomes due sooner.
LISTEN scheduler_wake

-- name: listen_cancel
-- Carries the id of a cancelled run, so the runner executing it stops the call at once.
LISTEN scheduler_cancel

-- name: listen_secrets
-- Carries a namespace whose signing secrets changed (a rotation), so runners drop their copy.
LISTEN scheduler_secrets

-- =============================================================================== partition upkeep

-- name: maintenance_try_lock
-- Only one runner at a time does partition upkeep; the others skip it (transaction-scoped lock).
SELECT pg_try_advisory_xact_lock(7262019385) AS locked

-- name: lock_timeout_short
-- Partition DDL needs a brief exclusive lock on runs; rather than queue every runner behind it,
-- give up after a moment and try again at the next upkeep.
SET LOCAL lock_timeout = '2s'

-- name: run_partitions_ensure
-- Creates the daily partitions of runs from the day before `today` (the database's, unless passed)
-- to `days_ahead` days after it.
SELECT run_partitions_ensure(
    coalesce(%(today)s::date, (now() AT TIME ZONE 'UTC')::date) - 1,
    coalesce(%(today)s::date, (now() AT TIME ZONE 'UTC')::date) + %(days_ahead)s::integer
) AS created

-- name: run_partitions_drop_expired
-- Retention as a partition drop, not a DELETE storm: removes days older than the retention.
SELECT run_partitions_drop_before(coalesce(%(today)s::date, (now() AT TIME ZONE 'UTC')::date) - %(retention_days)s::integer)
    AS dropped

-- ================================================================================ the web console

-- name: console_secret_ensure
-- The first API process to need the console's signing secret stores its random one; every later
-- caller (and a racing one) reads whichever row won.
WITH made AS (
    INSERT INTO console_secret (singleton, secret) VALUES (true, %(secret)s)
    ON CONFLICT (singleton) DO NOTHING
    RETURNING secret
)
SELECT secret FROM made
UNION ALL
SELECT secret FROM console_secret
LIMIT 1

-- name: session_time_zone_utc
-- Run on a new connection only when the server's zone is another name for UTC (Debian's default is
-- Etc/UTC): naming it UTC moves no time, and lets the driver's C loader give datetime.UTC values,
-- which load and compare several times faster than ZoneInfo('Etc/UTC') ones on every claimed row.
SET TimeZone TO 'UTC'
