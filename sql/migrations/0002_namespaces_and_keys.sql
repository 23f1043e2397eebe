-- Tenants: namespaces, their API keys (stored as SHA-256 hashes) and their webhook signing secrets.

CREATE TABLE namespaces (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    namespace text NOT NULL REFERENCES namespaces (name),
    -- The first characters of the key, shown by `scheduler keys list` so people can tell keys apart.
    prefix text NOT NULL,
    -- Keys carry 256 random bits, so a plain SHA-256 is enough to make a stolen table useless.
    key_hash bytea NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_namespace_idx ON api_keys (namespace);

CREATE TABLE signing_secrets (
    id uuid PRIMARY KEY,
    namespace text NOT NULL REFERENCES namespaces (name),
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set when a newer secret replaces this one: calls are signed with both until then.
    expires_at timestamptz
);
CREATE INDEX signing_secrets_namespace_idx ON signing_secrets (namespace, created_at DESC);
-- One current (non-expiring) secret per namespace: runners that create it at once agree on one.
CREATE UNIQUE INDEX signing_secrets_current_key ON signing_secrets (namespace) WHERE expires_at IS NULL;
