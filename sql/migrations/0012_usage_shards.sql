-- The namespace job count in shards, so creates in one namespace stop taking turns on one row.
--
-- Every create used to lock the namespace's one namespace_usage row until its commit, so creates
-- in a namespace committed one after another, each waiting for the previous one's WAL flush. Now a
-- create counts itself into one of 16 shard rows, each allowed its share of the quota left over by
-- namespace_usage (which keeps the count from before this migration, and what a previous release
-- still running during an upgrade counts there): the total is namespace_usage.jobs plus the
-- shards. Expand only: namespace_usage stays as it was.
CREATE TABLE namespace_usage_shards (
    namespace text NOT NULL,
    shard smallint NOT NULL CHECK (shard BETWEEN 0 AND 15),
    jobs bigint NOT NULL DEFAULT 0 CHECK (jobs >= 0),
    PRIMARY KEY (namespace, shard)
);

INSERT INTO namespace_usage_shards (namespace, shard)
SELECT namespace, shard FROM namespace_usage, generate_series(0, 15) AS shard;
