-- "Unfinished" runs (pending or running) named once, and each job's count of them kept exact.

-- The queries write run_status_unfinished(status) wherever they mean those statuses. The function
-- is IMMUTABLE and one SQL expression, so the planner inlines it into each query and still proves
-- the partial index runs_active_job_idx (written with the literal list in 0001) usable. That index
-- is kept rather than rebuilt over the function: building an index of the partitioned runs table
-- holds off every insert of the runners while it reads the whole history, and CONCURRENTLY is not
-- possible on a partitioned table.
CREATE OR REPLACE FUNCTION run_status_unfinished(status run_status) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN status IN ('pending', 'running');

-- Retention drops whole days of runs; an unfinished run among them (a runner fleet down for longer
-- than the retention) leaves its job's count with it, or the job would count it forever (and an
-- overlap "skip" job would skip every later fire). The count is changed before the drop, so the
-- job rows are locked before the runs table, the order every other writer takes them in.
CREATE OR REPLACE FUNCTION run_partitions_drop_before(cutoff_day date) RETURNS integer
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
        EXECUTE format(
            'UPDATE jobs j SET active_runs = j.active_runs - c.unfinished'
            ' FROM (SELECT job_id, count(*) AS unfinished FROM %I'
            '       WHERE run_status_unfinished(status) GROUP BY job_id) c'
            ' WHERE j.id = c.job_id',
            part.relname
        );
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    WITH gone AS (
        DELETE FROM runs_default WHERE scheduled_for < cutoff_day::timestamp AT TIME ZONE 'UTC'
        RETURNING job_id, status
    )
    UPDATE jobs j SET active_runs = j.active_runs - c.unfinished
    FROM (
        SELECT job_id, count(*) AS unfinished FROM gone WHERE run_status_unfinished(status) GROUP BY job_id
    ) c
    WHERE j.id = c.job_id;
    RETURN dropped;
END
$$;

-- The statements that keep jobs.active_runs no longer clamp it at zero, so a count that would go
-- below its runs fails the CHECK (active_runs >= 0, there since 0001) instead of hiding. Counts that
-- drifted while they were clamped are made exact here first, with writes to jobs held off so that
-- no run starts or ends between the count and its write.
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

WITH counted AS (
    SELECT job_id, count(*) AS unfinished FROM runs WHERE run_status_unfinished(status) GROUP BY job_id
)
UPDATE jobs j SET active_runs = coalesce(c.unfinished, 0)
FROM jobs k
LEFT JOIN counted c ON c.job_id = k.id
WHERE j.id = k.id AND j.active_runs <> coalesce(c.unfinished, 0);
