-- Runs: their history, partitioned by slot day. Read top to bottom: a run is recorded, started and
-- leased, ended, and read.
--
-- "Unfinished" (pending or running) is spelled once, by the function run_status_unfinished(status)
-- (migration 0006). It is an inlinable IMMUTABLE SQL function, so the planner sees its body, and
-- the partial index runs_active_job_idx (predicate "status IN ('pending', 'running')") still serves
-- the queries written with it: tests/integration/test_query_plans.py checks that it does. Every statement that
-- moves runs into or out of those statuses changes its jobs' active_runs by the rows it moved, in
-- the same statement, and never clamps it: a count that would go below zero fails the CHECK on
-- jobs.active_runs instead of hiding the drift (tests/integration/test_active_runs.py).
--
-- Every query names the columns it returns and reads, never `*` (tests/unit/test_sql_columns.py):
-- see the head of jobs.sql.

-- ================================================================================= recording runs

-- name: run_record_many
-- Records runs and moves their jobs on, in one statement for a whole batch (binary arrays unnested in
-- step: per-row parameters would cost a round trip each). Runs that start now get the lease and a
-- fresh fencing token; runs of actions finished inline (log) arrive final and become last_run. The
-- unique constraint on (job, slot, attempt), not luck, keeps two runners from recording one slot
-- twice: a conflicting row is dropped and not returned, so it is not executed. Each job's count of
-- unfinished runs grows by the pending and running rows actually inserted, whether or not the job is
-- in `moves`, which says whether its next_run_at is set (a claim) or kept (a retry). The times are
-- the database's now, or the claim's `now` when a test passes one; a run claimed ahead of its slot
-- starts at the slot (the runner holds its call until then), and its lease counts from there.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
), inserted AS (
    INSERT INTO runs (
        id, job_id, scheduled_for, trigger, attempt, status, runner, lease_token, lease_expires_at,
        available_at, started_at, finished_at, duration_ms, error
    )
    SELECT
        u.id, u.job_id, u.scheduled_for, u.trigger, u.attempt, u.status,
        CASE WHEN u.status NOT IN ('pending', 'skipped') THEN %(runner)s END,
        CASE WHEN u.status = 'running' THEN gen_random_uuid() END,
        CASE WHEN u.status = 'running'
             THEN greatest(clock.now, u.scheduled_for) + make_interval(secs => %(lease_s)s) END,
        clock.now + make_interval(secs => u.available_in_s),
        CASE WHEN u.status = 'running' THEN greatest(clock.now, u.scheduled_for)
             WHEN u.status <> 'pending' THEN clock.now END,
        CASE WHEN NOT run_status_unfinished(u.status) THEN clock.now END,
        CASE WHEN NOT run_status_unfinished(u.status) THEN 0 END,
        u.error
    FROM clock, unnest(
        %(ids)b::uuid[], %(job_ids)b::uuid[], %(scheduled_fors)b::timestamptz[],
        %(triggers)b::run_trigger[], %(attempts)b::integer[], %(statuses)b::run_status[],
        %(available_in_s)b::double precision[], %(errors)b::text[]
    ) AS u(id, job_id, scheduled_for, trigger, attempt, status, available_in_s, error)
    ON CONFLICT (job_id, scheduled_for, attempt) DO NOTHING
    RETURNING id, job_id, scheduled_for, status, lease_token, started_at
), per_job AS (
    SELECT
        job_id,
        count(*) FILTER (WHERE run_status_unfinished(status)) AS active,
        (array_agg(id ORDER BY scheduled_for DESC) FILTER (WHERE status = 'succeeded'))[1] AS last_id,
        max(scheduled_for) FILTER (WHERE status = 'succeeded') AS last_slot
    FROM inserted
    GROUP BY job_id
), moved AS (
    UPDATE jobs j SET
        next_run_at = CASE WHEN m.moves THEN m.next_run_at ELSE j.next_run_at END,
        active_runs = j.active_runs + coalesce(p.active, 0),
        last_run_id = coalesce(p.last_id, j.last_run_id),
        last_run_status = CASE WHEN p.last_id IS NULL THEN j.last_run_status ELSE 'succeeded' END,
        consecutive_failures = CASE WHEN p.last_id IS NULL THEN j.consecutive_failures ELSE 0 END,
        failed_slots = CASE WHEN p.last_id IS NULL THEN j.failed_slots ELSE 0 END,
        last_run_scheduled_for = coalesce(p.last_slot, j.last_run_scheduled_for),
        last_run_finished_at = CASE WHEN p.last_id IS NULL THEN j.last_run_finished_at ELSE clock.now END
    FROM clock, unnest(
        %(move_job_ids)b::uuid[], %(moves)b::boolean[], %(next_run_ats)b::timestamptz[]
    ) AS m(job_id, moves, next_run_at)
    -- A job with runs inserted but no move (a caller's slip) still has them counted.
    FULL JOIN per_job p ON p.job_id = m.job_id
    WHERE j.id = coalesce(m.job_id, p.job_id)
)
SELECT id, scheduled_for, status, lease_token, started_at FROM inserted

-- name: run_insert_one
-- A run made by a request (manual trigger, manual retry): pending and available now, waiting
-- (available_at NULL) behind a running one, or already final (skipped). A pending one counts on its
-- job's unfinished runs (the caller holds the job's lock). Wakes the runners.
WITH created AS (
    INSERT INTO runs (
        id, job_id, scheduled_for, trigger, attempt, status, available_at, started_at, finished_at,
        duration_ms, error
    ) VALUES (
        %(id)s, %(job_id)s, %(scheduled_for)s, %(trigger)s::run_trigger, %(attempt)s,
        %(status)s::run_status, now() + make_interval(secs => %(available_in_s)s::double precision),
        CASE WHEN run_status_unfinished(%(status)s::run_status) THEN NULL ELSE now() END,
        CASE WHEN run_status_unfinished(%(status)s::run_status) THEN NULL ELSE now() END,
        CASE WHEN run_status_unfinished(%(status)s::run_status) THEN NULL ELSE 0 END,
        %(error)s
    )
    ON CONFLICT (job_id, scheduled_for, attempt) DO NOTHING
    RETURNING
        id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
        duration_ms, http_status, output, error, available_at, created_at
), counted AS (
    UPDATE jobs SET active_runs = active_runs + 1
    FROM created WHERE jobs.id = created.job_id AND run_status_unfinished(created.status)
), wake AS (
    SELECT pg_notify('scheduler_wake', '') FROM created WHERE created.available_at IS NOT NULL
)
SELECT id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
       duration_ms, http_status, output, error, available_at, created_at
FROM created LEFT JOIN wake ON true

-- ================================================================= starting runs and their leases

-- name: run_claim_pending
-- Starts pending runs whose time has come (retries after their backoff, manual triggers, queued
-- runs whose predecessor ended), oldest first, skipping rows another runner is taking. Only the run
-- rows are locked; the job's settings are read alongside for the execution.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
), picked AS (
    SELECT r.id, r.scheduled_for
    FROM runs r, clock
    WHERE r.status = 'pending' AND r.available_at <= clock.now
    ORDER BY r.available_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE runs r SET
    status = 'running',
    runner = %(runner)s,
    lease_token = gen_random_uuid(),
    lease_expires_at = clock.now + make_interval(secs => %(lease_s)s),
    started_at = clock.now
FROM picked p, jobs j, clock
WHERE r.id = p.id AND r.scheduled_for = p.scheduled_for AND j.id = r.job_id
RETURNING
    r.id AS run_id, r.job_id, r.scheduled_for, r.trigger, r.attempt, r.lease_token, r.started_at,
    j.namespace, j.name AS job_name, j.action, j.timeout_s, j.retry_max_attempts, j.retry_min_backoff_s, j.retry_max_backoff_s,
    j.overlap

-- name: run_heartbeat_many
-- Renews the leases of runs still executing; a row that is no longer running under the caller's
-- token is not returned, telling the runner to abandon that call.
UPDATE runs r
SET lease_expires_at = coalesce(%(now)s::timestamptz, now()) + make_interval(secs => %(lease_s)s)
FROM unnest(%(ids)b::uuid[], %(scheduled_fors)b::timestamptz[], %(lease_tokens)b::uuid[])
    AS u(id, scheduled_for, lease_token)
WHERE r.id = u.id AND r.scheduled_for = u.scheduled_for AND r.lease_token = u.lease_token
  AND r.status = 'running'
RETURNING r.id

-- name: run_release_many
-- Graceful shutdown: runs the runner could not finish go back to pending, available at once, so
-- another runner starts them now instead of after the lease. Same attempt: it never completed.
WITH released AS (
    UPDATE runs r SET
        status = 'pending',
        runner = NULL,
        lease_token = NULL,
        lease_expires_at = NULL,
        started_at = NULL,
        -- A run claimed ahead and handed back before its slot must not start early elsewhere.
        available_at = greatest(now(), r.scheduled_for)
    FROM unnest(%(ids)b::uuid[], %(scheduled_fors)b::timestamptz[], %(lease_tokens)b::uuid[])
        AS u(id, scheduled_for, lease_token)
    WHERE r.id = u.id AND r.scheduled_for = u.scheduled_for AND r.lease_token = u.lease_token
      AND r.status = 'running'
    RETURNING r.id
)
SELECT id, pg_notify('scheduler_wake', '') FROM released

-- name: run_find_expired
-- The rescuer's sweep: running rows whose lease ran out (their runner died, froze or lost the
-- database), with what the retry decision needs and the job's namespace and name for the metrics
-- and the log lines. The partial index holds only running rows.
SELECT r.id AS run_id, r.job_id, r.scheduled_for, r.trigger, r.attempt, r.runner,
       j.retry_max_attempts, j.retry_min_backoff_s, j.retry_max_backoff_s, j.overlap,
       j.namespace, j.name AS job_name
FROM runs r
JOIN jobs j ON j.id = r.job_id
WHERE r.status = 'running' AND r.lease_expires_at < coalesce(%(now)s::timestamptz, now())
ORDER BY r.lease_expires_at
LIMIT %(limit)s

-- ==================================================================================== ending runs

-- name: run_complete_many
-- Ends a batch of runs with their outcomes. Fenced: a row changes only while it is still running
-- under the caller's lease token, so a runner that lost its lease cannot overwrite what another
-- wrote. A NULL token is the rescuer's: it ends the row only if its lease has expired. The jobs of
-- accepted rows get their last_run and their count of unfinished runs in the same statement; their
-- rows were locked first by job_lock_many. The rescuer may pass the `now` its sweep used.
-- `requests` and `response_headers` are what an HTTP attempt sent and got back, already masked
-- by the runner (JSON, or NULL: log actions, rescues). `start_delays_s` move started_at to when
-- the call really began (the row was written with the claim's now, or the slot it was claimed for).
-- `finals` says which outcomes end their slot (no retry follows): those count in failed_slots, and
-- where that count reaches the job's notify.after, or a success ends a streak reported failing, the
-- event goes into the notifications outbox in this same statement (and notify.pause_after pauses
-- the job), so an event exists exactly when the outcome that caused it was committed.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
), outcome AS (
    SELECT id, scheduled_for, lease_token, status, duration_ms, start_delay_s, http_status, output,
           error, final, request, response_headers
    FROM unnest(
        %(ids)b::uuid[], %(scheduled_fors)b::timestamptz[], %(lease_tokens)b::uuid[],
        %(statuses)b::run_status[], %(durations_ms)b::integer[],
        %(start_delays_s)b::double precision[], %(http_statuses)b::integer[],
        %(outputs)b::text[], %(errors)b::text[], %(finals)b::boolean[],
        %(requests)b::jsonb[], %(response_headers)b::jsonb[]
    ) AS o(id, scheduled_for, lease_token, status, duration_ms, start_delay_s, http_status, output,
           error, final, request, response_headers)
), done AS (
    UPDATE runs r SET
        status = o.status,
        started_at = r.started_at + make_interval(secs => o.start_delay_s),
        finished_at = clock.now,
        duration_ms = o.duration_ms,
        http_status = o.http_status,
        output = o.output,
        error = o.error,
        request = o.request,
        response_headers = o.response_headers,
        lease_expires_at = NULL
    FROM outcome o, clock
    WHERE r.id = o.id
      AND r.scheduled_for = o.scheduled_for
      AND r.status = 'running'
      AND (r.lease_token = o.lease_token OR (o.lease_token IS NULL AND r.lease_expires_at < clock.now))
    RETURNING r.id, r.job_id, r.status, r.scheduled_for, r.finished_at, o.final
), per_job AS (
    SELECT DISTINCT ON (job_id)
        job_id, id, status, scheduled_for, finished_at, count(*) OVER (PARTITION BY job_id) AS ended,
        count(*) FILTER (WHERE status NOT IN ('succeeded', 'skipped')) OVER (PARTITION BY job_id) AS failed,
        count(*) FILTER (WHERE final AND status NOT IN ('succeeded', 'skipped'))
            OVER (PARTITION BY job_id) AS failed_final
    FROM done
    ORDER BY job_id, scheduled_for DESC
), jobs_done AS (
    UPDATE jobs j SET
        active_runs = j.active_runs - p.ended,
        last_run_id = CASE WHEN p.newer THEN p.id ELSE j.last_run_id END,
        last_run_status = CASE WHEN p.newer THEN p.status ELSE j.last_run_status END,
        consecutive_failures = CASE
            WHEN p.status = 'succeeded' THEN 0
            WHEN p.status = 'skipped' THEN j.consecutive_failures
            ELSE j.consecutive_failures + p.failed
        END,
        failed_slots = p.failed_after,
        paused = j.paused OR p.pauses,
        next_run_at = CASE WHEN p.pauses THEN NULL ELSE j.next_run_at END,
        pause_note = CASE
            WHEN p.pauses THEN format(
                'paused by notify.pause_after: %%s slots in a row failed, the last in run %%s', p.failed_after, p.id
            )
            ELSE j.pause_note
        END,
        version = CASE WHEN p.pauses THEN j.version + 1 ELSE j.version END,
        updated_at = CASE WHEN p.pauses THEN clock.now ELSE j.updated_at END,
        last_run_scheduled_for = CASE WHEN p.newer THEN p.scheduled_for ELSE j.last_run_scheduled_for END,
        last_run_finished_at = CASE WHEN p.newer THEN p.finished_at ELSE j.last_run_finished_at END
    FROM clock, (
        SELECT s.job_id, s.id, s.status, s.scheduled_for, s.finished_at, s.ended, s.failed, s.newer,
               s.notify, s.failed_before, s.failed_after, coalesce(
            s.failed_final > 0 AND NOT s.was_paused AND s.failed_after >= (s.notify ->> 'pause_after')::integer,
            false
        ) AS pauses
        FROM (
            -- An older slot finishing late (overlap "allow") does not replace a newer last_run.
            SELECT per_job.job_id, per_job.id, per_job.status, per_job.scheduled_for,
                   per_job.finished_at, per_job.ended, per_job.failed, per_job.failed_final,
                   (jj.last_run_scheduled_for IS NULL
                    OR per_job.scheduled_for >= jj.last_run_scheduled_for) AS newer,
                   jj.notify, jj.paused AS was_paused, jj.failed_slots AS failed_before,
                   CASE
                       WHEN per_job.status = 'succeeded' THEN 0
                       WHEN per_job.status = 'skipped' THEN jj.failed_slots
                       ELSE jj.failed_slots + per_job.failed_final
                   END AS failed_after
            FROM per_job JOIN jobs jj ON jj.id = per_job.job_id
        ) s
    ) p
    WHERE j.id = p.job_id
    RETURNING j.id, j.namespace, p.id AS run_id, p.scheduled_for AS run_scheduled_for, p.notify,
              p.failed_before, p.failed_after, p.pauses
), notified AS (
    -- job.failing when the count reaches notify.after; job.recovered when a success ends a streak
    -- whose newest event is a job.failing (the lookup runs only for a job whose streak just ended).
    INSERT INTO notifications (
        job_id, namespace, event, run_id, run_scheduled_for, failed_slots, paused, url, available_at,
        created_at
    )
    SELECT d.id, d.namespace, e.event, d.run_id, d.run_scheduled_for, e.failed_slots, d.pauses,
           d.notify ->> 'url', clock.now, clock.now
    FROM clock, jobs_done d
    CROSS JOIN LATERAL (
        SELECT 'job.failing'::notification_event, d.failed_after
        WHERE d.failed_before < coalesce((d.notify ->> 'after')::integer, 3)
          AND d.failed_after >= coalesce((d.notify ->> 'after')::integer, 3)
        UNION ALL
        SELECT 'job.recovered'::notification_event, d.failed_before
        WHERE CASE
            WHEN d.failed_after = 0 AND d.failed_before > 0
                 AND coalesce((d.notify ->> 'on_recovery')::boolean, true)
            THEN (SELECT n.event FROM notifications n WHERE n.job_id = d.id ORDER BY n.seq DESC LIMIT 1)
                 = 'job.failing'
            ELSE false
        END
    ) AS e(event, failed_slots)
    WHERE d.notify ->> 'url' IS NOT NULL
)
SELECT id FROM done

-- name: run_cancel
-- Cancels one unfinished run (the caller holds its job's lock), takes it off its job's count of
-- unfinished runs, and tells its runner at commit.
WITH cancelled AS (
    UPDATE runs SET
        status = 'cancelled',
        finished_at = now(),
        -- A run claimed ahead and cancelled while it waited for its slot never started.
        started_at = CASE WHEN started_at <= now() THEN started_at END,
        duration_ms = CASE WHEN started_at <= now()
                           THEN (extract(epoch FROM now() - started_at) * 1000)::integer END,
        error = %(reason)s,
        lease_expires_at = NULL
    WHERE id = %(id)s AND scheduled_for = %(scheduled_for)s AND run_status_unfinished(status)
    RETURNING
        id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
        duration_ms, http_status, output, error, available_at, created_at
), counted AS (
    UPDATE jobs SET active_runs = active_runs - 1
    FROM cancelled WHERE jobs.id = cancelled.job_id
), told AS (
    SELECT pg_notify('scheduler_cancel', cancelled.id::text) FROM cancelled
)
SELECT id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
       duration_ms, http_status, output, error, available_at, created_at
FROM cancelled LEFT JOIN told ON true

-- name: run_cancel_active_for_job
-- Ends every pending or running run of a job (being deleted, or replaced by a newer fire; its row
-- is locked by the caller), takes them off the job's count of unfinished runs, and tells their
-- runners at commit, so in-flight calls stop at once instead of at the next heartbeat.
WITH cancelled AS (
    UPDATE runs SET
        status = 'cancelled',
        finished_at = now(),
        -- A run claimed ahead and cancelled while it waited for its slot never started.
        started_at = CASE WHEN started_at <= now() THEN started_at END,
        duration_ms = CASE WHEN started_at <= now()
                           THEN (extract(epoch FROM now() - started_at) * 1000)::integer END,
        error = %(reason)s,
        lease_expires_at = NULL
    WHERE job_id = %(job_id)s AND run_status_unfinished(status)
    RETURNING id
), counted AS (
    UPDATE jobs SET active_runs = active_runs - (SELECT count(*) FROM cancelled)
    WHERE id = %(job_id)s AND EXISTS (SELECT 1 FROM cancelled)
)
SELECT id, pg_notify('scheduler_cancel', id::text) FROM cancelled

-- ====================================================================== overlap queue and retries

-- name: run_has_queued
-- Whether the job already has a run waiting behind a running one (overlap "queue" keeps one).
SELECT EXISTS (
    SELECT 1 FROM runs WHERE job_id = %(job_id)s AND status = 'pending' AND available_at IS NULL
) AS queued

-- name: run_promote_queued
-- Overlap "queue": when the job's running run ends, its waiting run becomes available now.
WITH promoted AS (
    UPDATE runs SET available_at = now()
    WHERE job_id = ANY(%(job_ids)b::uuid[]) AND status = 'pending' AND available_at IS NULL
    RETURNING id
)
SELECT count(*) AS promoted, pg_notify('scheduler_wake', '') FROM promoted HAVING count(*) > 0

-- name: run_latest_attempt
-- The newest attempt of a slot: a manual retry must follow it, not an older one.
SELECT max(attempt) AS latest_attempt FROM runs WHERE job_id = %(job_id)s AND scheduled_for = %(scheduled_for)s

-- =================================================================================== reading runs

-- name: run_get
-- A run by id: the id's UUIDv7 timestamp is its slot, so the bounds on scheduled_for prune the
-- lookup to one partition; the join on jobs hides other namespaces' runs.
SELECT r.id, r.job_id, r.scheduled_for, r.trigger, r.attempt, r.status, r.runner, r.started_at,
       r.finished_at, r.duration_ms, r.http_status, r.output, r.error, r.available_at, r.created_at
FROM runs r
JOIN jobs j ON j.id = r.job_id
WHERE r.id = %(id)s
  AND r.scheduled_for >= %(slot_from)s AND r.scheduled_for < %(slot_to)s
  AND j.namespace = %(namespace)s

-- name: run_status_many
-- The status of each of these runs that exists: after a claim's commit was cut, the runner asks
-- whether its log runs stand before it emits their events (having locked their jobs, so a commit
-- still in flight has ended); a heartbeat that could not renew runs tells a cancel (stop the call
-- quietly) from a lost lease (warn), when no LISTEN connection brought the cancel.
SELECT r.id, r.status
FROM runs r
JOIN unnest(%(ids)s::uuid[], %(slots)s::timestamptz[]) AS k(id, scheduled_for)
  ON r.id = k.id AND r.scheduled_for = k.scheduled_for

-- name: run_list_for_job
-- History newest first by (slot, attempt) with a keyset cursor; runs_slot_key serves the order in
-- each partition and the explicit bound on scheduled_for lets partitions past the cursor be pruned.
SELECT id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
       duration_ms, http_status, output, error, available_at, created_at
FROM runs
WHERE job_id = %(job_id)s
  AND scheduled_for <= %(before_slot)s
  AND (scheduled_for, attempt) < (%(before_slot)s, %(before_attempt)s)
  AND (%(statuses)s::run_status[] IS NULL OR status = ANY(%(statuses)s::run_status[]))
ORDER BY scheduled_for DESC, attempt DESC
LIMIT %(limit)s

-- name: run_attempts
-- Every attempt of one slot of a job, first to last: the run page's attempt chain (runs_slot_key).
SELECT id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
       duration_ms, http_status, output, error, available_at, created_at
FROM runs
WHERE job_id = %(job_id)s AND scheduled_for = %(scheduled_for)s
ORDER BY attempt

-- name: run_attempts_of_slots
-- Every attempt of each of these slots (job, slot), first to last within a slot: the console's runs
-- page shows a slot with all its attempts even when a filter matched only some. One probe of
-- runs_slot_key per slot; the slots given are those of one page, so a few dozen.
SELECT r.id, r.job_id, r.scheduled_for, r.trigger, r.attempt, r.status, r.runner, r.started_at,
       r.finished_at, r.duration_ms, r.http_status, r.output, r.error, r.available_at, r.created_at
FROM unnest(%(job_ids)b::uuid[], %(slots)b::timestamptz[]) AS k(job_id, scheduled_for)
JOIN runs r ON r.job_id = k.job_id AND r.scheduled_for = k.scheduled_for
ORDER BY r.job_id, r.scheduled_for, r.attempt

-- name: run_exchange_get
-- What one attempt sent and got back beyond status and body (the run page, GET /runs/{id}): kept
-- out of the listings, which would carry it for every row. The slot prunes to one partition.
SELECT request, response_headers FROM runs WHERE id = %(id)s AND scheduled_for = %(scheduled_for)s

-- name: run_list_namespace
-- The namespace's runs across jobs, newest first by id: a run's UUIDv7 time is its slot to the
-- millisecond, so each partition's primary key serves the order (a merge of backward index scans
-- that stops at the page) and no index of its own adds to every run the runners insert. The slot
-- bounds prune partitions: the first page ends just past now (the partitions made ahead are empty),
-- a later page at its cursor's millisecond, and since/until at theirs. Filters not asked for are
-- passed as always-true values, keeping one plan.
SELECT r.id, r.job_id, r.scheduled_for, r.trigger, r.attempt, r.status, r.runner, r.started_at,
       r.finished_at, r.duration_ms, r.http_status, r.output, r.error, r.available_at, r.created_at
FROM runs r
JOIN jobs j ON j.id = r.job_id
WHERE j.namespace = %(namespace)s
  AND j.labels @> %(labels)s::jsonb
  AND r.id < %(before_id)s
  AND r.scheduled_for < %(before_slot)s
  AND r.scheduled_for >= %(since)s
  AND (%(statuses)s::run_status[] IS NULL OR r.status = ANY(%(statuses)s::run_status[]))
  AND (%(trigger)s::run_trigger IS NULL OR r.trigger = %(trigger)s::run_trigger)
ORDER BY r.id DESC
LIMIT %(limit)s

-- name: run_list_namespace_job
-- The same page for one job of the namespace: runs_slot_key finds the job's runs in the slot range,
-- which are few beside the namespace's, and they are put in the listing's id order.
SELECT r.id, r.job_id, r.scheduled_for, r.trigger, r.attempt, r.status, r.runner, r.started_at,
       r.finished_at, r.duration_ms, r.http_status, r.output, r.error, r.available_at, r.created_at
FROM runs r
JOIN jobs j ON j.id = r.job_id
WHERE j.namespace = %(namespace)s
  AND r.job_id = %(job_id)s
  AND j.labels @> %(labels)s::jsonb
  AND r.id < %(before_id)s
  AND r.scheduled_for < %(before_slot)s
  AND r.scheduled_for >= %(since)s
  AND (%(statuses)s::run_status[] IS NULL OR r.status = ANY(%(statuses)s::run_status[]))
  AND (%(trigger)s::run_trigger IS NULL OR r.trigger = %(trigger)s::run_trigger)
ORDER BY r.id DESC
LIMIT %(limit)s
