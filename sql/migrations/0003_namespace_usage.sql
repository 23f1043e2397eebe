-- A running count of each namespace's jobs, so the quota check on create is one row, not a count
-- over the namespace (which runners keep rewriting, so index-only scans would not stay cheap).

CREATE TABLE namespace_usage (
    namespace text PRIMARY KEY,
    jobs bigint NOT NULL DEFAULT 0 CHECK (jobs >= 0)
);

INSERT INTO namespace_usage (namespace, jobs)
SELECT namespace, count(*) FROM jobs GROUP BY namespace;
