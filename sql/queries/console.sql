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

-- name: job_pause_note_set
-- The console's note on a paused job (NULL clears it); the caller holds the job's lock.
UPDATE jobs SET pause_note = %(note)s WHERE id = %(id)s AND namespace = %(namespace)s

-- name: job_list_failing
-- The console's "failing" filter: jobs whose last run did not succeed, in name order on the same
-- keyset as job_list (a failing job is rare, so the name index is walked with the filter).
SELECT * FROM jobs
WHERE namespace = %(namespace)s
  AND name > %(after_name)s
  AND name >= %(prefix_low)s AND name < %(prefix_high)s
  AND labels @> %(labels)s::jsonb
  AND (%(paused)s::boolean IS NULL OR paused = %(paused)s::boolean)
  AND last_run_status IS NOT NULL AND last_run_status <> 'succeeded'
ORDER BY name
LIMIT %(limit)s

-- name: job_recent_outcomes
-- For each job on a console page, its last 50 runs (newest slot first on runs_slot_key, partitions
-- ahead of now pruned) folded into the outcome strip and the p95 lateness of the scheduled ones.
SELECT j.id,
       array_agg(r.status::text ORDER BY r.scheduled_for, r.attempt) AS outcomes,
       percentile_cont(0.95) WITHIN GROUP (
           ORDER BY extract(epoch FROM r.started_at - r.scheduled_for)
       ) FILTER (WHERE r.trigger IN ('schedule', 'catchup') AND r.started_at IS NOT NULL) AS p95_lateness_s
FROM unnest(%(ids)b::uuid[]) AS j(id)
CROSS JOIN LATERAL (
    SELECT status, trigger, scheduled_for, attempt, started_at
    FROM runs
    WHERE job_id = j.id AND scheduled_for <= %(before_slot)s
    ORDER BY scheduled_for DESC, attempt DESC
    LIMIT 50
) r
GROUP BY j.id

-- name: run_attempts
-- Every attempt of one slot of a job, first to last: the run page's attempt chain (runs_slot_key).
SELECT id, job_id, scheduled_for, trigger, attempt, status, runner, started_at, finished_at,
       duration_ms, http_status, output, error, available_at, created_at
FROM runs
WHERE job_id = %(job_id)s AND scheduled_for = %(scheduled_for)s
ORDER BY attempt

-- name: job_names
-- The names of the jobs a page of runs belongs to (primary key lookups, one namespace).
SELECT id, name FROM jobs WHERE id = ANY(%(ids)b::uuid[]) AND namespace = %(namespace)s
