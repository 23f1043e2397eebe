-- Jobs (the schedules), runs (their history, partitioned by slot time) and the helpers that keep
-- run partitions ahead of time.

CREATE TYPE run_status AS ENUM (
    'pending', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'skipped', 'lost'
);
CREATE TYPE run_trigger AS ENUM ('schedule', 'manual', 'retry', 'catchup');
CREATE TYPE misfire_policy AS ENUM ('skip', 'once', 'all');
CREATE TYPE overlap_policy AS ENUM ('skip', 'allow', 'queue', 'replace');

CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    namespace text NOT NULL,
    -- Byte order: names are ASCII, and the unique index then serves listing by name and prefix.
    name text COLLATE "C" NOT NULL,
    description text NOT NULL DEFAULT '',
    schedule text NOT NULL,
    timezone text NOT NULL,
    start_at timestamptz,
    end_at timestamptz,
    -- `@every` schedules count their intervals from here: start_at when given, else creation.
    anchor_at timestamptz NOT NULL,
    action jsonb NOT NULL,
    timeout_s integer NOT NULL CHECK (timeout_s BETWEEN 1 AND 3600),
    retry_max_attempts integer NOT NULL CHECK (retry_max_attempts BETWEEN 1 AND 20),
    retry_min_backoff_s double precision NOT NULL,
    retry_max_backoff_s double precision NOT NULL,
    misfire_policy misfire_policy NOT NULL,
    misfire_grace_s integer NOT NULL,
    misfire_window_s integer NOT NULL,
    overlap overlap_policy NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    labels jsonb NOT NULL DEFAULT '{}',
    -- The next slot to fire; NULL when paused or when the schedule has no further slot.
    next_run_at timestamptz,
    -- Runs of this job that are pending or running: the overlap policy decides on it without a
    -- look into the partitioned runs table.
    active_runs integer NOT NULL DEFAULT 0 CHECK (active_runs >= 0),
    last_run_id uuid,
    last_run_status run_status,
    last_run_scheduled_for timestamptz,
    last_run_finished_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version integer NOT NULL DEFAULT 1,
    CONSTRAINT jobs_namespace_name_key UNIQUE (namespace, name)
) WITH (
    -- Every fire rewrites the row; free space on the page keeps the last_run updates HOT, and an
    -- eager autovacuum keeps the due index free of dead entries at the head of the queue.
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

-- The claim query walks this index in slot order; paused and finished jobs are not in it.
CREATE INDEX jobs_due_idx ON jobs (next_run_at) WHERE next_run_at IS NOT NULL;
-- Listing a namespace's jobs pages by name on jobs_namespace_name_key; no index of its own, since
-- every fire rewrites the row and each index on it costs that write another entry.

CREATE TABLE runs (
    -- UUIDv7 whose timestamp is scheduled_for, so a lookup by id alone finds its partition.
    id uuid NOT NULL,
    job_id uuid NOT NULL,
    scheduled_for timestamptz NOT NULL,
    trigger run_trigger NOT NULL,
    attempt integer NOT NULL,
    status run_status NOT NULL,
    runner text,
    -- Fencing: heartbeats and completions must present the token of the claim that owns the run.
    lease_token uuid,
    lease_expires_at timestamptz,
    -- When a pending run may start: retry backoff, or a manual trigger. NULL while a queued run
    -- waits for the job's running run to end.
    available_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    duration_ms integer,
    http_status integer,
    output text,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, scheduled_for),
    -- One row per (job, slot, attempt), whatever the number of runners.
    CONSTRAINT runs_slot_key UNIQUE (job_id, scheduled_for, attempt)
) PARTITION BY RANGE (scheduled_for);

-- Sweeps and claims of runs look only at the few unfinished rows.
CREATE INDEX runs_running_lease_idx ON runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_pending_available_idx ON runs (available_at) WHERE status = 'pending';
CREATE INDEX runs_active_job_idx ON runs (job_id) WHERE status IN ('pending', 'running');

-- Slots outside every daily partition (far catch-up, clock trouble) land here instead of failing.
CREATE TABLE runs_default PARTITION OF runs DEFAULT;

-- Creates the daily partitions covering [first_day, last_day] and returns how many it made. A day
-- whose rows already sit in the default partition is left there: attaching it would fail.
CREATE FUNCTION run_partitions_ensure(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date := first_day;
    made integer := 0;
    part text;
    lo timestamptz;
    hi timestamptz;
BEGIN
    WHILE day <= last_day LOOP
        part := 'runs_' || to_char(day, 'YYYYMMDD');
        lo := day::timestamp AT TIME ZONE 'UTC';
        hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
        IF to_regclass(part) IS NULL
           AND NOT EXISTS (SELECT 1 FROM runs_default WHERE scheduled_for >= lo AND scheduled_for < hi) THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF runs FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
            made := made + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN made;
END
$$;

-- Drops the daily partitions that end on or before cutoff_day, and the default partition's rows
-- older than it; returns how many partitions it dropped.
CREATE FUNCTION run_partitions_drop_before(cutoff_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'runs'::regclass
          AND c.relname ~ '^runs_[0-9]{8}$'
          AND to_date(substr(c.relname, 6), 'YYYYMMDD') < cutoff_day
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    DELETE FROM runs_default WHERE scheduled_for < cutoff_day::timestamp AT TIME ZONE 'UTC';
    RETURN dropped;
END
$$;

SELECT run_partitions_ensure(current_date - 7, current_date + 7);
