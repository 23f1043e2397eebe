"""The queries of `sql/queries/tenants.sql`: namespaces, their API keys and their signing secrets."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from scheduler.db.connections import AsyncConn
from scheduler.db.rows import column, execute, fetch_all, fetch_one, struct, unread

unread("pg_notify", queries=("signing_secrets_changed",))


# ------------------------------------------------------------------------------------ namespaces


async def namespace_ensure(conn: AsyncConn, *, name: str) -> None:
    """Create the namespace if it does not exist."""
    await execute(conn, "namespace_ensure", {"name": name})


_JOBS = column("jobs", int, "namespace_usage_add")


async def namespace_usage_add(conn: AsyncConn, *, namespace: str, delta: int) -> int:
    """Count jobs into or out of a namespace (caller's transaction); return its new job count."""
    return await fetch_one(conn, _JOBS, "namespace_usage_add", {"namespace": namespace, "delta": delta}) or 0


USAGE_SHARDS = 16
"""How many rows a namespace's job count is spread over (the migration's CHECK says the same)."""
_SHARD_JOBS = column("jobs", int, "namespace_usage_take_one", "namespace_usage_give_back_one")


async def namespace_usage_shards_ensure(conn: AsyncConn, *, namespace: str) -> None:
    """Make the namespace's shard rows if they are not there yet."""
    await execute(conn, "namespace_usage_shards_ensure", {"namespace": namespace})


async def namespace_usage_take_one(conn: AsyncConn, *, namespace: str, shard: int, quota: int) -> bool:
    """Count one new job into ``shard`` if it has room under its share of ``quota``; whether it had."""
    params = {"namespace": namespace, "shard": shard, "quota": quota}
    return await fetch_one(conn, _SHARD_JOBS, "namespace_usage_take_one", params) is not None


async def namespace_usage_give_back_one(conn: AsyncConn, *, namespace: str, shard: int) -> bool:
    """Count one deleted job out of ``shard``; False when that shard holds none."""
    params = {"namespace": namespace, "shard": shard}
    return await fetch_one(conn, _SHARD_JOBS, "namespace_usage_give_back_one", params) is not None


class UsageShard(msgspec.Struct, frozen=True):
    """One shard of a namespace's job count, and its share of the quota."""

    shard: int
    jobs: int
    share: int


_SHARD = struct(UsageShard, "namespace_usage_lock_shards")


async def namespace_usage_lock_shards(conn: AsyncConn, *, namespace: str, quota: int) -> list[UsageShard]:
    """Lock every shard of the namespace in shard order (caller's transaction), with their shares."""
    return await fetch_all(
        conn, _SHARD, "namespace_usage_lock_shards", {"namespace": namespace, "quota": quota}
    )


async def namespace_usage_set_shards(conn: AsyncConn, *, namespace: str, counts: dict[int, int]) -> None:
    """Write the counts of shards the caller holds locked."""
    params = {"namespace": namespace, "shards": list(counts), "counts": list(counts.values())}
    await execute(conn, "namespace_usage_set_shards", params)


# -------------------------------------------------------------------------------------- api keys


class ApiKey(msgspec.Struct, kw_only=True):
    """An API key as listed (never the key itself)."""

    id: UUID
    namespace: str
    prefix: str
    description: str
    created_at: datetime
    revoked_at: datetime | None


_API_KEY = struct(ApiKey, "api_key_insert", "api_key_list", "api_key_revoke")
_NAMESPACE = column("namespace", str, "api_key_lookup")


async def api_key_insert(
    conn: AsyncConn, *, key_id: UUID, namespace: str, prefix: str, key_hash: bytes, description: str
) -> ApiKey:
    """Store a new key's hash."""
    params = {
        "id": key_id,
        "namespace": namespace,
        "prefix": prefix,
        "key_hash": key_hash,
        "description": description,
    }
    inserted = await fetch_one(conn, _API_KEY, "api_key_insert", params)
    if inserted is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
        raise RuntimeError("api key insert returned nothing")
    return inserted


async def api_key_lookup(conn: AsyncConn, *, key_hash: bytes) -> str | None:
    """Return the namespace of a live key with this hash."""
    return await fetch_one(conn, _NAMESPACE, "api_key_lookup", {"key_hash": key_hash})


async def api_key_list(conn: AsyncConn, *, namespace: str | None) -> list[ApiKey]:
    """Return keys, newest first."""
    return await fetch_all(conn, _API_KEY, "api_key_list", {"namespace": namespace})


async def api_key_revoke(conn: AsyncConn, *, key: str) -> ApiKey | None:
    """Revoke a key by id or prefix; None when no live key matches."""
    return await fetch_one(conn, _API_KEY, "api_key_revoke", {"key": key})


# ------------------------------------------------------------------------------- signing secrets


async def signing_secret_create(
    conn: AsyncConn, *, namespace: str, secret: str, grace_s: float | None, secret_id: UUID
) -> None:
    """Make ``secret`` the namespace's current one (caller's transaction), stored as ``secret_id``.

    With ``grace_s`` this is a rotation: the old current secret stays valid that long. Without it, the
    secret is only added when the namespace has no current one. The caller names the row (a UUIDv7
    of its clock).
    """
    await execute(conn, "namespace_ensure", {"name": namespace})
    if grace_s is not None:
        await execute(conn, "signing_secret_expire_current", {"namespace": namespace, "grace_s": grace_s})
    params = {"id": secret_id, "namespace": namespace, "secret": secret}
    await execute(conn, "signing_secret_insert", params)
    await execute(conn, "signing_secrets_changed", {"namespace": namespace})


_SECRET = column("secret", str, "signing_secrets_current")


async def signing_secrets_current(conn: AsyncConn, *, namespace: str) -> list[str]:
    """The namespace's unexpired signing secrets, newest first."""
    return await fetch_all(conn, _SECRET, "signing_secrets_current", {"namespace": namespace})


class SigningSecret(msgspec.Struct, kw_only=True, frozen=True):
    """A namespace's signing secret that is still valid; ``expires_at`` is None for the current one."""

    secret: str
    created_at: datetime
    expires_at: datetime | None


_SIGNING_SECRET = struct(SigningSecret, "signing_secrets_valid")


async def signing_secrets_valid(conn: AsyncConn, *, namespace: str) -> list[SigningSecret]:
    """The namespace's secrets that still verify, newest (the current one) first."""
    return await fetch_all(conn, _SIGNING_SECRET, "signing_secrets_valid", {"namespace": namespace})


# ------------------------------------------------------------------------------ idempotency keys


class StoredAnswer(msgspec.Struct, kw_only=True, frozen=True):
    """What the first request with an idempotency key answered."""

    fingerprint: bytes
    status: int
    body: bytes
    location: str | None
    etag: str | None


_CLAIMED = column("claimed", bool, "idempotency_claim")
_ANSWER = struct(StoredAnswer, "idempotency_get")


async def idempotency_claim(conn: AsyncConn, *, namespace: str, key: str, fingerprint: bytes) -> bool:
    """Take the key for this request (caller's transaction); False when a live key answers instead."""
    params = {"namespace": namespace, "key": key, "fingerprint": fingerprint}
    claimed = await fetch_one(conn, _CLAIMED, "idempotency_claim", params)
    return claimed is True


async def idempotency_get(conn: AsyncConn, *, namespace: str, key: str) -> StoredAnswer | None:
    """What the first request with this key answered."""
    return await fetch_one(conn, _ANSWER, "idempotency_get", {"namespace": namespace, "key": key})


async def idempotency_record(conn: AsyncConn, *, namespace: str, key: str, answer: StoredAnswer) -> None:
    """Keep the answer of the request holding the key, with what it wrote."""
    params = {
        "namespace": namespace,
        "key": key,
        "status": answer.status,
        "body": answer.body,
        "location": answer.location,
        "etag": answer.etag,
    }
    await execute(conn, "idempotency_record", params)


async def idempotency_expire(conn: AsyncConn) -> None:
    """Delete keys past their 24 hours."""
    await execute(conn, "idempotency_expire")
