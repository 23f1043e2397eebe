-- Idempotency keys (the IETF httpapi Idempotency-Key header): a POST that creates a job or a run,
-- retried by its client with the same key, answers what the first one answered instead of making a
-- second job or run. Kept 24 hours per namespace; expired keys are ignored and then deleted.
CREATE TABLE idempotency_keys (
    namespace text NOT NULL,
    key text NOT NULL,
    -- The method and route template and a hash of the body: the same key with another request is refused.
    fingerprint bytea NOT NULL,
    status integer NOT NULL,
    body bytea NOT NULL,
    location text,
    etag text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
