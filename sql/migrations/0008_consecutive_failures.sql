-- How many of a job's newest finished runs in a row did not succeed (each attempt counts; a success
-- sets it back to 0). Kept beside last_run by the statements that end runs, so "which jobs keep
-- failing" is read off the job row. Jobs that exist start from their last run: 1 if it did not succeed.
ALTER TABLE jobs ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0
    CHECK (consecutive_failures >= 0);

UPDATE jobs SET consecutive_failures = 1
WHERE last_run_status IS NOT NULL AND last_run_status NOT IN ('succeeded', 'skipped');
