-- Tenants: namespaces and their job counts, API keys, webhook signing secrets.

-- ===================================================================================== namespaces

-- name: namespace_ensure
-- Namespaces come into being with their first key (or the first job when auth is off).
INSERT INTO namespaces (name) VALUES (%(name)s) ON CONFLICT (name) DO NOTHING

-- name: namespace_usage_add
-- Counts a job into (or, with -1, out of) its namespace inside the creating or deleting
-- transaction; the row lock it takes makes concurrent creates in one namespace check the quota one
-- after another, and the returned count is what the quota is checked against.
INSERT INTO namespace_usage (namespace, jobs) VALUES (%(namespace)s, greatest(%(delta)s, 0))
ON CONFLICT (namespace) DO UPDATE SET jobs = greatest(namespace_usage.jobs + %(delta)s, 0)
RETURNING jobs

-- name: namespace_usage_shards_ensure
-- The namespace's 16 shard rows, made by its first create (a no-op once they exist; never a lock).
INSERT INTO namespace_usage_shards (namespace, shard)
SELECT %(namespace)s, shard FROM generate_series(0, 15) AS shard
ON CONFLICT (namespace, shard) DO NOTHING

-- name: namespace_usage_take_one
-- Counts one new job into shard `shard` if it is under its share of the quota (the room the
-- quota leaves over namespace_usage, split evenly over the 16 shards) and the namespace's total
-- is under the quota. The share keeps racing creates exact; the total keeps the count exact when
-- shares shrank (the quota lowered, or a previous release counting into namespace_usage during an
-- upgrade) and one shard holds more than its share. A full shard is not locked, so a create that
-- goes on to try another holds nothing meanwhile. No row: full (or the shard row is not there yet).
WITH base AS (
    SELECT coalesce((SELECT jobs FROM namespace_usage WHERE namespace = %(namespace)s), 0) AS jobs
), room AS (
    SELECT greatest(%(quota)s - base.jobs, 0) AS left_over,
           base.jobs + coalesce(
               (SELECT sum(jobs) FROM namespace_usage_shards WHERE namespace = %(namespace)s), 0
           ) AS total
    FROM base
)
UPDATE namespace_usage_shards s SET jobs = s.jobs + 1
FROM room
WHERE s.namespace = %(namespace)s AND s.shard = %(shard)s
  AND s.jobs < room.left_over / 16 + (s.shard < mod(room.left_over, 16))::int
  AND room.total < %(quota)s
RETURNING s.jobs

-- name: namespace_usage_give_back_one
-- Counts one deleted job out of shard `shard`, if that shard holds any.
UPDATE namespace_usage_shards SET jobs = jobs - 1
WHERE namespace = %(namespace)s AND shard = %(shard)s AND jobs > 0
RETURNING jobs

-- name: namespace_usage_lock_shards
-- Every shard of the namespace, locked in shard order (a create holds at most one shard and waits
-- for nothing while it does, so this order cannot deadlock with it), with each one's share.
WITH room AS (
    SELECT greatest(%(quota)s - coalesce(
        (SELECT jobs FROM namespace_usage WHERE namespace = %(namespace)s), 0), 0) AS left_over
)
SELECT s.shard, s.jobs, room.left_over / 16 + (s.shard < mod(room.left_over, 16))::int AS share
FROM namespace_usage_shards s, room
WHERE s.namespace = %(namespace)s
ORDER BY s.shard
FOR UPDATE OF s

-- name: namespace_usage_set_shards
-- Writes the counts a bulk change decided for the shards it locked.
UPDATE namespace_usage_shards s SET jobs = c.jobs
FROM unnest(%(shards)s::smallint[], %(counts)s::bigint[]) AS c(shard, jobs)
WHERE s.namespace = %(namespace)s AND s.shard = c.shard

-- ======================================================================================= api keys

-- name: api_key_insert
-- Stores only the hash and a short prefix; the key itself is shown once and never again.
INSERT INTO api_keys (id, namespace, prefix, key_hash, description)
VALUES (%(id)s, %(namespace)s, %(prefix)s, %(key_hash)s, %(description)s)
RETURNING id, namespace, prefix, description, created_at, revoked_at

-- name: api_key_lookup
-- The authentication check: an exact match on the hash of the presented key, not revoked.
SELECT namespace FROM api_keys WHERE key_hash = %(key_hash)s AND revoked_at IS NULL

-- name: api_key_list
-- Every key, newest first, optionally of one namespace.
SELECT id, namespace, prefix, description, created_at, revoked_at
FROM api_keys
WHERE %(namespace)s::text IS NULL OR namespace = %(namespace)s::text
ORDER BY created_at DESC

-- name: api_key_revoke
-- Revocation keeps the row for the audit trail; API processes notice within their cache lifetime.
UPDATE api_keys SET revoked_at = now()
WHERE (id::text = %(key)s OR prefix = %(key)s) AND revoked_at IS NULL
RETURNING id, namespace, prefix, description, created_at, revoked_at

-- ================================================================================ signing secrets

-- name: signing_secret_expire_current
-- Starts a rotation: the current secret stays valid (and keeps signing) until the grace ends.
UPDATE signing_secrets SET expires_at = now() + make_interval(secs => %(grace_s)s)
WHERE namespace = %(namespace)s AND expires_at IS NULL

-- name: signing_secret_insert
-- A new current secret for a namespace. When another process made one first, nothing is inserted
-- and the caller reads theirs; a rotation expires the current one before calling this.
INSERT INTO signing_secrets (id, namespace, secret) VALUES (%(id)s, %(namespace)s, %(secret)s)
ON CONFLICT (namespace) WHERE expires_at IS NULL DO NOTHING

-- name: signing_secrets_changed
-- Tells the runners (at commit) to drop their cached secrets of this namespace, so a rotation signs
-- with the new secret at once rather than when the cache expires.
SELECT pg_notify('scheduler_secrets', %(namespace)s)

-- name: signing_secrets_current
-- The secrets a runner signs a namespace's calls with: every one not yet expired, newest first.
SELECT secret FROM signing_secrets
WHERE namespace = %(namespace)s AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at DESC

-- name: signing_secrets_valid
-- What `scheduler secrets show` prints: every secret still valid, newest first, with its expiry.
SELECT secret, created_at, expires_at FROM signing_secrets
WHERE namespace = %(namespace)s AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at DESC

-- ================================================================================ idempotency keys

-- name: idempotency_claim
-- Takes a key for this request: a new key, or one past its 24 hours, is this request's (a row comes
-- back). A live key returns nothing: the caller reads what it answered. A request racing with the
-- same key waits here on the key until the first commits (then reads its answer) or rolls back
-- (then the key is its own).
INSERT INTO idempotency_keys AS k (namespace, key, fingerprint, status, body)
VALUES (%(namespace)s, %(key)s, %(fingerprint)s, 0, '')
ON CONFLICT (namespace, key) DO UPDATE
    SET fingerprint = excluded.fingerprint, status = 0, body = '', location = NULL, etag = NULL,
        created_at = now()
    WHERE k.created_at < now() - interval '24 hours'
RETURNING true AS claimed

-- name: idempotency_get
-- What the first request with this key answered.
SELECT fingerprint, status, body, location, etag FROM idempotency_keys
WHERE namespace = %(namespace)s AND key = %(key)s

-- name: idempotency_record
-- Keeps the answer of the request that holds the key, in its transaction (so with what it wrote).
UPDATE idempotency_keys SET status = %(status)s, body = %(body)s, location = %(location)s, etag = %(etag)s
WHERE namespace = %(namespace)s AND key = %(key)s

-- name: idempotency_expire
-- Deletes keys past their 24 hours (the partition upkeep's pass); expired ones are ignored before.
DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'
