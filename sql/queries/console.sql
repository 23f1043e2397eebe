-- The web console's own reads of jobs: its jobs page in orders other than by name, the count of each
-- state, and each job's last runs folded per slot. The console's page by name is the API's job_list.
--
-- No index serves the orders by next run, last run or creation: every fire rewrites a job row, and
-- an index on next_run_at or last_run_* would cost each of those writes an entry (and its HOT update).
-- A page in these orders scans the namespace's rows once and keeps the top few (a top-N sort), which
-- is what bench/ui.py times at 100,000 jobs. Their keysets read "none" (a paused job's next run, a
-- job never run) as infinity, so those jobs come last whichever way the page goes, and the name breaks
-- ties, so no job is skipped or shown twice between pages.
--
-- Two things keep that scan about half as dear: filters not asked for are tested against their
-- parameter first (an empty prefix, no labels), so the row's name and labels are not read for them;
-- and the top 50 are picked as (id, key, name) before the 50 whole rows are read by primary key, so
-- the sort does not carry every candidate's action and labels. The columns are job_list's, named
-- (tests/unit/test_sql_columns.py says why a `*` is refused).
--
-- Jobs are returned by name, in the Job row shape's order, never as `*`: see the head of jobs.sql.

-- name: console_job_list_by_next
-- Soonest next run first; jobs with none (paused, no further slot) last. The keyset is (next run, name).
WITH page AS (
    SELECT id, coalesce(next_run_at, 'infinity') AS at, name FROM jobs
    WHERE namespace = %(namespace)s
      AND (%(prefix_low)s = '' OR (name >= %(prefix_low)s AND name < %(prefix_high)s))
      AND (%(labels)s::jsonb = '{}'::jsonb OR labels @> %(labels)s::jsonb)
      AND (%(paused)s::boolean IS NULL OR paused = %(paused)s::boolean)
      AND (NOT %(failing)s::boolean OR (last_run_status IS NOT NULL AND last_run_status <> 'succeeded'))
      AND (coalesce(next_run_at, 'infinity'), name) > (%(after_at)s::timestamptz, %(after_name)s::text)
    ORDER BY coalesce(next_run_at, 'infinity'), name
    LIMIT %(limit)s
)
SELECT j.id, j.namespace, j.name, j.description, j.schedule, j.timezone, j.start_at, j.end_at, j.action, j.timeout_s,
       j.retry_max_attempts, j.retry_min_backoff_s, j.retry_max_backoff_s, j.misfire_policy,
       j.misfire_grace_s, j.misfire_window_s, j.overlap, j.paused, j.labels, j.next_run_at, j.anchor_at,
       j.schedules, j.exclusions, j.notify, j.last_run_id, j.last_run_status, j.last_run_scheduled_for,
       j.last_run_finished_at, j.created_at, j.updated_at, j.version, j.active_runs, j.pause_note,
       j.consecutive_failures, j.failed_slots
FROM page JOIN jobs j ON j.id = page.id
ORDER BY page.at, page.name

-- name: console_job_list_by_last
-- Newest last run (its slot) first, jobs never run last; among equal slots (every hourly job shares
-- one) by name. The keyset is the slot going down, then the name going up.
WITH page AS (
    SELECT id, coalesce(last_run_scheduled_for, '-infinity') AS at, name FROM jobs
    WHERE namespace = %(namespace)s
      AND (%(prefix_low)s = '' OR (name >= %(prefix_low)s AND name < %(prefix_high)s))
      AND (%(labels)s::jsonb = '{}'::jsonb OR labels @> %(labels)s::jsonb)
      AND (%(paused)s::boolean IS NULL OR paused = %(paused)s::boolean)
      AND (NOT %(failing)s::boolean OR (last_run_status IS NOT NULL AND last_run_status <> 'succeeded'))
      AND (coalesce(last_run_scheduled_for, '-infinity') < %(after_at)s::timestamptz
           OR (coalesce(last_run_scheduled_for, '-infinity') = %(after_at)s::timestamptz
               AND name > %(after_name)s::text))
    ORDER BY coalesce(last_run_scheduled_for, '-infinity') DESC, name
    LIMIT %(limit)s
)
SELECT j.id, j.namespace, j.name, j.description, j.schedule, j.timezone, j.start_at, j.end_at, j.action, j.timeout_s,
       j.retry_max_attempts, j.retry_min_backoff_s, j.retry_max_backoff_s, j.misfire_policy,
       j.misfire_grace_s, j.misfire_window_s, j.overlap, j.paused, j.labels, j.next_run_at, j.anchor_at,
       j.schedules, j.exclusions, j.notify, j.last_run_id, j.last_run_status, j.last_run_scheduled_for,
       j.last_run_finished_at, j.created_at, j.updated_at, j.version, j.active_runs, j.pause_note,
       j.consecutive_failures, j.failed_slots
FROM page JOIN jobs j ON j.id = page.id
ORDER BY page.at DESC, page.name

-- name: console_job_list_by_created
-- Newest job first; jobs created in one transaction (an apply) share a creation time, so by name
-- among them. The keyset is the creation time going down, then the name going up.
WITH page AS (
    SELECT id, created_at AS at, name FROM jobs
    WHERE namespace = %(namespace)s
      AND (%(prefix_low)s = '' OR (name >= %(prefix_low)s AND name < %(prefix_high)s))
      AND (%(labels)s::jsonb = '{}'::jsonb OR labels @> %(labels)s::jsonb)
      AND (%(paused)s::boolean IS NULL OR paused = %(paused)s::boolean)
      AND (NOT %(failing)s::boolean OR (last_run_status IS NOT NULL AND last_run_status <> 'succeeded'))
      AND (created_at < %(after_at)s::timestamptz
           OR (created_at = %(after_at)s::timestamptz AND name > %(after_name)s::text))
    ORDER BY created_at DESC, name
    LIMIT %(limit)s
)
SELECT j.id, j.namespace, j.name, j.description, j.schedule, j.timezone, j.start_at, j.end_at, j.action, j.timeout_s,
       j.retry_max_attempts, j.retry_min_backoff_s, j.retry_max_backoff_s, j.misfire_policy,
       j.misfire_grace_s, j.misfire_window_s, j.overlap, j.paused, j.labels, j.next_run_at, j.anchor_at,
       j.schedules, j.exclusions, j.notify, j.last_run_id, j.last_run_status, j.last_run_scheduled_for,
       j.last_run_finished_at, j.created_at, j.updated_at, j.version, j.active_runs, j.pause_note,
       j.consecutive_failures, j.failed_slots
FROM page JOIN jobs j ON j.id = page.id
ORDER BY page.at DESC, page.name

-- name: console_job_counts
-- How many of the jobs a search matches (name prefix, labels) are active, paused and failing, for the
-- jobs page's state tabs; "failing" is job_list_failing's test. One pass over the namespace's rows,
-- its filters tested against their parameters first as above.
SELECT count(*) AS total,
       count(*) FILTER (WHERE NOT paused) AS active,
       count(*) FILTER (WHERE paused) AS paused,
       count(*) FILTER (WHERE last_run_status IS NOT NULL AND last_run_status <> 'succeeded') AS failing
FROM jobs
WHERE namespace = %(namespace)s
  AND (%(prefix_low)s = '' OR (name >= %(prefix_low)s AND name < %(prefix_high)s))
  AND (%(labels)s::jsonb = '{}'::jsonb OR labels @> %(labels)s::jsonb)

-- name: console_job_recent_slots
-- For each job on a console page, its last 50 slots (newest first on runs_slot_key, partitions ahead
-- of now pruned), each as its newest attempt's status, so a slot retried four times is one outcome;
-- and the p95 lateness of the first attempts of scheduled slots (a retry's backoff is not lateness).
SELECT j.id,
       array_agg(s.status::text ORDER BY s.scheduled_for) AS outcomes,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY s.first_late_s)
           FILTER (WHERE s.first_late_s IS NOT NULL) AS p95_lateness_s
FROM unnest(%(ids)b::uuid[]) AS j(id)
CROSS JOIN LATERAL (
    SELECT scheduled_for,
           (array_agg(status ORDER BY attempt DESC))[1] AS status,
           extract(epoch FROM min(started_at - scheduled_for)
               FILTER (WHERE attempt = 1 AND trigger IN ('schedule', 'catchup'))) AS first_late_s
    FROM runs
    WHERE job_id = j.id AND scheduled_for <= %(before_slot)s
    GROUP BY scheduled_for
    ORDER BY scheduled_for DESC
    LIMIT 50
) s
GROUP BY j.id
