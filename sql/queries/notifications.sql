-- Notifications: the outbox of job.failing and job.recovered events. Rows are written by
-- run_complete_many (runs.sql), in the transaction that ends the run causing them; here they are
-- claimed and delivered by the runners' notifier, read by the API, and forgotten after retention.

-- ===================================================================================== delivering

-- name: notification_claim_due
-- The notifier's claim: pending events whose time has come, oldest first, skipping rows another
-- runner holds, and only a job's oldest pending event (a recovery never overtakes the failure it
-- follows). Claiming pushes available_at past the delivery's timeout, so an event whose notifier
-- died mid-delivery is claimed again then (at least once); attempts counts claims, and fences the
-- outcome. The job's name, labels and timeout come along for the body and the call.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
), picked AS (
    SELECT n.id
    FROM notifications n, clock
    WHERE n.status = 'pending' AND n.available_at <= clock.now
      AND NOT EXISTS (
          SELECT 1 FROM notifications o
          WHERE o.job_id = n.job_id AND o.seq < n.seq AND o.status = 'pending'
      )
    ORDER BY n.available_at
    LIMIT %(limit)s
    FOR UPDATE OF n SKIP LOCKED
)
UPDATE notifications n SET
    attempts = n.attempts + 1,
    last_attempt_at = clock.now,
    available_at = clock.now + make_interval(secs => j.timeout_s + %(lease_s)s)
FROM picked p, clock, jobs j
WHERE n.id = p.id AND j.id = n.job_id
RETURNING n.id, n.job_id, n.namespace, n.event, n.run_id, n.run_scheduled_for, n.failed_slots,
          n.paused, n.url, n.attempts, n.payload, n.created_at, j.name AS job_name, j.labels,
          j.timeout_s

-- name: notification_failed_runs
-- The newest failed attempts of a job up to a slot, for an event's body: runs_slot_key walked
-- backwards from the slot, so a failing job finds them at the head of its history.
SELECT id, scheduled_for, attempt, status, http_status, error, finished_at
FROM runs
WHERE job_id = %(job_id)s AND scheduled_for <= %(until)s
  AND status IN ('failed', 'timed_out', 'lost')
ORDER BY scheduled_for DESC, attempt DESC
LIMIT %(limit)s

-- name: notification_attempted
-- Records how a delivery went: delivered, due again after a backoff, or expired (given up, or the
-- next attempt would fall past the age limit). Fenced by the attempt number the claim gave, so an
-- attempt that outlived its claim cannot overwrite a newer one. The body is kept from the first
-- attempt, so every later one signs the same bytes.
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, now()) AS now
)
UPDATE notifications n SET
    status = CASE
        WHEN %(delivered)s THEN 'delivered'::notification_status
        WHEN %(give_up)s
             OR clock.now + make_interval(secs => %(retry_in_s)s) > n.created_at + make_interval(secs => %(max_age_s)s)
            THEN 'expired'::notification_status
        ELSE 'pending'::notification_status
    END,
    available_at = clock.now + make_interval(secs => %(retry_in_s)s),
    delivered_at = CASE WHEN %(delivered)s THEN clock.now END,
    last_http_status = %(http_status)s,
    last_error = %(error)s,
    payload = coalesce(n.payload, %(payload)s)
FROM clock
WHERE n.id = %(id)s AND n.attempts = %(attempt)s AND n.status = 'pending'
RETURNING n.status

-- ======================================================================================= reading

-- name: notification_list_for_job
-- A job's events newest first, keyset-paged on notifications_job_idx; the namespace check makes
-- another tenant's job look as if it had none (the API has checked the job exists first).
SELECT id, job_id, seq, event, run_id, run_scheduled_for, failed_slots, paused, url, status,
       attempts, last_attempt_at, last_http_status, last_error, created_at, delivered_at
FROM notifications
WHERE job_id = %(job_id)s AND namespace = %(namespace)s AND seq < %(before_seq)s
ORDER BY seq DESC
LIMIT %(limit)s

-- name: notification_list_for_runs
-- The events some runs of a job caused, for showing each beside its run (the console's run lists).
SELECT id, job_id, seq, event, run_id, run_scheduled_for, failed_slots, paused, url, status,
       attempts, last_attempt_at, last_http_status, last_error, created_at, delivered_at
FROM notifications
WHERE job_id = %(job_id)s AND namespace = %(namespace)s AND run_id = ANY(%(run_ids)s::uuid[])
ORDER BY seq DESC

-- ====================================================================================== retention

-- name: notification_delete_expired
-- Forgets events older than the run retention, with the runs they name; by partition upkeep, a
-- bounded batch per round on notifications_created_idx.
WITH old AS (
    SELECT id FROM notifications
    WHERE created_at < coalesce(%(today)s::date, (now() AT TIME ZONE 'UTC')::date)::timestamp AT TIME ZONE 'UTC'
                       - make_interval(days => %(retention_days)s::integer)
    LIMIT %(limit)s
)
DELETE FROM notifications n USING old WHERE n.id = old.id
RETURNING n.id
