-- Jobs: the schedules. Requests create, read and change them; runners claim the due ones.
--
-- Every query names the columns it returns, never `*` (tests/unit/test_sql_columns.py): a statement
-- psycopg has prepared on a connection fails once a migration changes what its `*` expands to
-- ("cached plan must not change result type"), so a release reading `*` breaks when the next one
-- adds a column. Jobs are returned in the order of the Job row shape (store.jobs), which reads a
-- row in that order without picking its columns out.

-- ======================================================================================= requests

-- name: job_insert
-- One statement creates the job and, when it is due within a minute, wakes the runners at commit;
-- a name already taken in the namespace returns no row (the API answers 409).
WITH created AS (
    INSERT INTO jobs (
        id, namespace, name, description, schedule, timezone, start_at, end_at, anchor_at, action,
        timeout_s, retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
        misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, schedules, exclusions,
        notify
    ) VALUES (
        %(id)s, %(namespace)s, %(name)s, %(description)s, %(schedule)s, %(timezone)s, %(start_at)s,
        %(end_at)s, %(anchor_at)s, %(action)s::jsonb, %(timeout_s)s, %(retry_max_attempts)s,
        %(retry_min_backoff_s)s, %(retry_max_backoff_s)s, %(misfire_policy)s::misfire_policy,
        %(misfire_grace_s)s, %(misfire_window_s)s, %(overlap)s::overlap_policy, %(paused)s,
        %(labels)s::jsonb, %(next_run_at)s, %(schedules)s::jsonb, %(exclusions)s::jsonb,
        %(notify)s::jsonb
    )
    ON CONFLICT ON CONSTRAINT jobs_namespace_name_key DO NOTHING
    RETURNING
        id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
        retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
        misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
        schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
        last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
        consecutive_failures, failed_slots
), wake AS (
    SELECT pg_notify('scheduler_wake', '') FROM created
    WHERE created.next_run_at < now() + interval '60 seconds'
)
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM created LEFT JOIN wake ON true

-- name: job_create
-- A create (POST /jobs) in one autocommit statement, so one round trip and no BEGIN/COMMIT: the job
-- is inserted only when shard `shard` of the namespace's count takes it, under the same share and
-- total as namespace_usage_take_one (the two must stay alike). No row: that shard is full or not
-- there yet, nothing was written, and the caller counts the slow way in a transaction. A name taken
-- in the namespace raises the unique violation (no ON CONFLICT), which undoes the count with it.
WITH base AS (
    SELECT coalesce((SELECT jobs FROM namespace_usage WHERE namespace = %(namespace)s), 0) AS jobs
), room AS (
    SELECT greatest(%(quota)s - base.jobs, 0) AS left_over,
           base.jobs + coalesce(
               (SELECT sum(jobs) FROM namespace_usage_shards WHERE namespace = %(namespace)s), 0
           ) AS total
    FROM base
), counted AS (
    UPDATE namespace_usage_shards s SET jobs = s.jobs + 1
    FROM room
    WHERE s.namespace = %(namespace)s AND s.shard = %(shard)s
      AND s.jobs < room.left_over / 16 + (s.shard < mod(room.left_over, 16))::int
      AND room.total < %(quota)s
    RETURNING s.jobs
), created AS (
    INSERT INTO jobs (
        id, namespace, name, description, schedule, timezone, start_at, end_at, anchor_at, action,
        timeout_s, retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
        misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, schedules, exclusions,
        notify
    )
    SELECT
        %(id)s::uuid, %(namespace)s, %(name)s, %(description)s, %(schedule)s, %(timezone)s,
        %(start_at)s::timestamptz, %(end_at)s::timestamptz, %(anchor_at)s::timestamptz,
        %(action)s::jsonb, %(timeout_s)s::int, %(retry_max_attempts)s::int,
        %(retry_min_backoff_s)s::float8, %(retry_max_backoff_s)s::float8,
        %(misfire_policy)s::misfire_policy, %(misfire_grace_s)s::int, %(misfire_window_s)s::int,
        %(overlap)s::overlap_policy, %(paused)s::boolean, %(labels)s::jsonb,
        %(next_run_at)s::timestamptz, %(schedules)s::jsonb, %(exclusions)s::jsonb, %(notify)s::jsonb
    FROM counted
    RETURNING
        id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
        retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
        misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
        schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
        last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
        consecutive_failures, failed_slots
), wake AS (
    SELECT pg_notify('scheduler_wake', '') FROM created
    WHERE created.next_run_at < now() + interval '60 seconds'
)
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM created LEFT JOIN wake ON true

-- name: job_insert_many
-- An apply's creates in one statement: each column comes as one array (binary, so no quoting of
-- each element), and N jobs cost one round trip and one plan. A name taken in the namespace is left out of the answer (the caller refuses
-- the apply); one notification wakes the runners when any of them is due within a minute.
WITH created AS (
    INSERT INTO jobs (
        id, namespace, name, description, schedule, timezone, start_at, end_at, anchor_at, action,
        timeout_s, retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
        misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, schedules, exclusions,
        notify
    )
    SELECT * FROM unnest(
        %(id)b::uuid[], %(namespace)b::text[], %(name)b::text[], %(description)b::text[],
        %(schedule)b::text[], %(timezone)b::text[], %(start_at)b::timestamptz[],
        %(end_at)b::timestamptz[], %(anchor_at)b::timestamptz[], %(action)b::jsonb[],
        %(timeout_s)b::int[], %(retry_max_attempts)b::int[], %(retry_min_backoff_s)b::float8[],
        %(retry_max_backoff_s)b::float8[], %(misfire_policy)b::misfire_policy[],
        %(misfire_grace_s)b::int[], %(misfire_window_s)b::int[], %(overlap)b::overlap_policy[],
        %(paused)b::boolean[], %(labels)b::jsonb[], %(next_run_at)b::timestamptz[],
        %(schedules)b::jsonb[], %(exclusions)b::jsonb[], %(notify)b::jsonb[]
    )
    ON CONFLICT ON CONSTRAINT jobs_namespace_name_key DO NOTHING
    RETURNING
        id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
        retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
        misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
        schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
        last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
        consecutive_failures, failed_slots
), wake AS (
    SELECT pg_notify('scheduler_wake', '')
    FROM (SELECT 1 FROM created WHERE created.next_run_at < now() + interval '60 seconds' LIMIT 1) AS soon
)
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM created LEFT JOIN wake ON true

-- name: job_get
-- Point lookup by primary key; the namespace check makes another tenant's id look absent.
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM jobs WHERE id = %(id)s AND namespace = %(namespace)s

-- name: job_lock
-- Locks the job for a request that changes it together with its runs (update, trigger, delete);
-- every writer takes the job row before any of its run rows, so they cannot deadlock.
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM jobs WHERE id = %(id)s AND namespace = %(namespace)s FOR UPDATE

-- name: job_get_by_name
-- Lookup on jobs_namespace_name_key: a job as the deploy that declared it names it.
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM jobs WHERE namespace = %(namespace)s AND name = %(name)s

-- name: job_lock_by_name
-- Locks the job of this name for a write by name (PUT /jobs/by-name/{name}); none when no job has it.
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM jobs WHERE namespace = %(namespace)s AND name = %(name)s FOR UPDATE

-- name: job_apply_lock
-- Applies in one namespace take turns: each holds this lock to its commit, so two deploys never
-- interleave (nor race to create the same new job), and a set is applied whole or not at all.
SELECT pg_advisory_xact_lock(hashtextextended('scheduler.apply:' || %(namespace)s, 0))

-- name: job_lock_for_apply
-- Locks every job an apply may change: those it names and, for prune, those its selector matches.
-- In name order, so two applies over overlapping sets take their locks in one order.
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM jobs
WHERE namespace = %(namespace)s
  AND (name = ANY(%(names)s::text[]) OR (%(prune)s AND labels @> %(selector)s::jsonb))
ORDER BY name
FOR UPDATE

-- name: job_list
-- Keyset pagination on jobs_namespace_name_key: the cursor is the last name seen, so a deep page
-- costs what the first does, and a name prefix is a range of the same index (the bounds are passed
-- explicitly so the plan does not depend on LIKE analysis). Filters not asked for are passed as
-- always-true values, keeping one plan.
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM jobs
WHERE namespace = %(namespace)s
  AND name > %(after_name)s
  AND name >= %(prefix_low)s AND name < %(prefix_high)s
  AND labels @> %(labels)s::jsonb
  AND (%(paused)s::boolean IS NULL OR paused = %(paused)s::boolean)
ORDER BY name
LIMIT %(limit)s

-- name: job_list_failing
-- The console's "failing" filter: jobs whose last run did not succeed, in name order on the same
-- keyset as job_list (a failing job is rare, so the name index is walked with the filter).
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM jobs
WHERE namespace = %(namespace)s
  AND name > %(after_name)s
  AND name >= %(prefix_low)s AND name < %(prefix_high)s
  AND labels @> %(labels)s::jsonb
  AND (%(paused)s::boolean IS NULL OR paused = %(paused)s::boolean)
  AND last_run_status IS NOT NULL AND last_run_status <> 'succeeded'
ORDER BY name
LIMIT %(limit)s

-- name: job_names
-- The names of the jobs a page of runs belongs to (primary key lookups, one namespace).
SELECT id, name FROM jobs WHERE id = ANY(%(ids)b::uuid[]) AND namespace = %(namespace)s

-- name: job_update
-- Writes every user-settable column of a locked job and bumps its version (the ETag); wakes the
-- runners when the new next_run_at is close.
WITH updated AS (
    UPDATE jobs SET
        name = %(name)s,
        description = %(description)s,
        schedule = %(schedule)s,
        timezone = %(timezone)s,
        start_at = %(start_at)s,
        end_at = %(end_at)s,
        anchor_at = %(anchor_at)s,
        action = %(action)s::jsonb,
        timeout_s = %(timeout_s)s,
        retry_max_attempts = %(retry_max_attempts)s,
        retry_min_backoff_s = %(retry_min_backoff_s)s,
        retry_max_backoff_s = %(retry_max_backoff_s)s,
        misfire_policy = %(misfire_policy)s::misfire_policy,
        misfire_grace_s = %(misfire_grace_s)s,
        misfire_window_s = %(misfire_window_s)s,
        overlap = %(overlap)s::overlap_policy,
        paused = %(paused)s,
        labels = %(labels)s::jsonb,
        next_run_at = %(next_run_at)s,
        schedules = %(schedules)s::jsonb,
        exclusions = %(exclusions)s::jsonb,
        notify = %(notify)s::jsonb,
        updated_at = now(),
        version = version + 1
    WHERE id = %(id)s AND namespace = %(namespace)s
    RETURNING
        id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
        retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
        misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
        schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
        last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
        consecutive_failures, failed_slots
), wake AS (
    SELECT pg_notify('scheduler_wake', '') FROM updated
    WHERE updated.next_run_at < now() + interval '60 seconds'
)
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM updated LEFT JOIN wake ON true

-- name: job_update_many
-- An apply's updates in one statement, each as job_update writes one (every settable column, the
-- version bumped), the new values coming as one array per column. The caller holds the rows'
-- locks (job_lock_for_apply); one notification wakes the runners when any is due within a minute.
WITH given AS (
    SELECT * FROM unnest(
        %(id)b::uuid[], %(namespace)b::text[], %(name)b::text[], %(description)b::text[],
        %(schedule)b::text[], %(timezone)b::text[], %(start_at)b::timestamptz[],
        %(end_at)b::timestamptz[], %(anchor_at)b::timestamptz[], %(action)b::jsonb[],
        %(timeout_s)b::int[], %(retry_max_attempts)b::int[], %(retry_min_backoff_s)b::float8[],
        %(retry_max_backoff_s)b::float8[], %(misfire_policy)b::misfire_policy[],
        %(misfire_grace_s)b::int[], %(misfire_window_s)b::int[], %(overlap)b::overlap_policy[],
        %(paused)b::boolean[], %(labels)b::jsonb[], %(next_run_at)b::timestamptz[],
        %(schedules)b::jsonb[], %(exclusions)b::jsonb[], %(notify)b::jsonb[]
    ) AS g (
        id, namespace, name, description, schedule, timezone, start_at, end_at, anchor_at, action,
        timeout_s, retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
        misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, schedules, exclusions,
        notify
    )
), updated AS (
    UPDATE jobs j SET
        name = g.name,
        description = g.description,
        schedule = g.schedule,
        timezone = g.timezone,
        start_at = g.start_at,
        end_at = g.end_at,
        anchor_at = g.anchor_at,
        action = g.action,
        timeout_s = g.timeout_s,
        retry_max_attempts = g.retry_max_attempts,
        retry_min_backoff_s = g.retry_min_backoff_s,
        retry_max_backoff_s = g.retry_max_backoff_s,
        misfire_policy = g.misfire_policy,
        misfire_grace_s = g.misfire_grace_s,
        misfire_window_s = g.misfire_window_s,
        overlap = g.overlap,
        paused = g.paused,
        labels = g.labels,
        next_run_at = g.next_run_at,
        schedules = g.schedules,
        exclusions = g.exclusions,
        notify = g.notify,
        updated_at = now(),
        version = j.version + 1
    FROM given g
    WHERE j.id = g.id AND j.namespace = g.namespace
    RETURNING
        j.id, j.namespace, j.name, j.description, j.schedule, j.timezone, j.start_at, j.end_at,
        j.action, j.timeout_s, j.retry_max_attempts, j.retry_min_backoff_s, j.retry_max_backoff_s,
        j.misfire_policy, j.misfire_grace_s, j.misfire_window_s, j.overlap, j.paused, j.labels,
        j.next_run_at, j.anchor_at, j.schedules, j.exclusions, j.notify, j.last_run_id,
        j.last_run_status, j.last_run_scheduled_for, j.last_run_finished_at, j.created_at,
        j.updated_at, j.version, j.active_runs, j.pause_note, j.consecutive_failures, j.failed_slots
), wake AS (
    SELECT pg_notify('scheduler_wake', '')
    FROM (SELECT 1 FROM updated WHERE updated.next_run_at < now() + interval '60 seconds' LIMIT 1) AS soon
)
SELECT id, namespace, name, description, schedule, timezone, start_at, end_at, action, timeout_s,
       retry_max_attempts, retry_min_backoff_s, retry_max_backoff_s, misfire_policy,
       misfire_grace_s, misfire_window_s, overlap, paused, labels, next_run_at, anchor_at,
       schedules, exclusions, notify, last_run_id, last_run_status, last_run_scheduled_for,
       last_run_finished_at, created_at, updated_at, version, active_runs, pause_note,
       consecutive_failures, failed_slots
FROM updated LEFT JOIN wake ON true

-- name: job_pause_note_set
-- The console's note on a paused job (NULL clears it); the caller holds the job's lock.
UPDATE jobs SET pause_note = %(note)s WHERE id = %(id)s AND namespace = %(namespace)s

-- name: job_delete
-- Removes the job row; its unfinished runs are cancelled by run_cancel_active_for_job first, in
-- the same transaction. Finished history stays until its partition ages out.
DELETE FROM jobs WHERE id = %(id)s AND namespace = %(namespace)s RETURNING id

-- name: job_delete_many
-- An apply's prune of jobs with no unfinished runs, in one statement (the caller holds their locks,
-- so none starts meanwhile; jobs with runs go through run_cancel_active_for_job and job_delete).
DELETE FROM jobs WHERE namespace = %(namespace)s AND id = ANY(%(ids)b::uuid[]) RETURNING id

-- ===================================================================================== the runner

-- name: job_claim_due
-- The heart of the runner: lock up to `limit` due jobs in slot order, skipping rows another runner
-- holds. The partial index jobs_due_idx serves both the filter and the order, and the database clock
-- (now()) decides what is due, whatever the runners' clocks say; a test passes `now` instead.
-- An HTTP job may be taken up to `lookahead_s` before its slot, so its call is ready to start at the
-- slot, but only where planning ahead changes nothing: a log action is recorded final inside the
-- claim (it would end before its slot), and a run in flight under skip, queue or replace could end
-- before the slot and change what the overlap policy makes of it (job_next_due says the same).
SELECT
    j.id, j.namespace, j.name, j.schedule, j.timezone, j.start_at, j.end_at, j.anchor_at,
    j.next_run_at, j.action, j.timeout_s, j.retry_max_attempts, j.retry_min_backoff_s,
    j.retry_max_backoff_s, j.misfire_policy, j.misfire_grace_s, j.misfire_window_s, j.overlap,
    j.active_runs, j.schedules, j.exclusions, coalesce(%(now)s::timestamptz, now()) AS db_now
FROM jobs j
WHERE j.next_run_at <= coalesce(%(now)s::timestamptz, now()) + make_interval(secs => %(lookahead_s)s)
  AND (j.next_run_at <= coalesce(%(now)s::timestamptz, now())
       OR (j.action ->> 'type' = 'http' AND (j.overlap = 'allow' OR j.active_runs = 0)))
ORDER BY j.next_run_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: job_lock_many
-- Locks the jobs a batch of run updates touches, in id order, before any run row: every path takes
-- job rows first and in the same order, so concurrent completions and rescues cannot deadlock.
SELECT id FROM jobs WHERE id = ANY(%(ids)b::uuid[]) ORDER BY id FOR UPDATE

-- name: job_next_due
-- How long the runner may sleep: until the earliest slot or pending run, by the database clock. The
-- earliest job is taken `lookahead_s` early when job_claim_due may claim it ahead; only that one row is
-- looked at (an index probe), so an HTTP job just behind a log job is claimed with it, on time anyway.
SELECT
    extract(epoch FROM (
        SELECT CASE WHEN j.action ->> 'type' = 'http' AND (j.overlap = 'allow' OR j.active_runs = 0)
                    THEN j.next_run_at - make_interval(secs => %(lookahead_s)s)
                    ELSE j.next_run_at END
        FROM jobs j WHERE j.next_run_at IS NOT NULL ORDER BY j.next_run_at LIMIT 1
    ) - now()) AS slot_in_s,
    extract(epoch FROM (SELECT min(available_at) FROM runs WHERE status = 'pending') - now())
        AS pending_in_s

-- name: job_due_backlog
-- The backlog gauge: jobs due now (or at `now`) and not yet claimed, counted on the due index and
-- capped so a huge backlog costs a bounded scan.
SELECT count(*) AS backlog FROM (
    SELECT 1 FROM jobs WHERE next_run_at <= coalesce(%(now)s::timestamptz, now()) LIMIT 1000000
) AS due

-- name: job_count_failing
-- The failing-jobs gauge: per namespace, the jobs whose newest finished runs did not succeed
-- (consecutive_failures > 0). One scan of the jobs table every backlog round; groups are as many as
-- namespaces with a failing job, capped so the answer stays small whatever the fleet holds.
SELECT namespace, count(*) AS failing
FROM jobs
WHERE consecutive_failures > 0
GROUP BY namespace
ORDER BY namespace
LIMIT 10000
