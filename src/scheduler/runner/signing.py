"""The webhook signing secrets a runner signs its calls with, per namespace, cached briefly."""

from __future__ import annotations

import asyncio
import time

from scheduler.db import store
from scheduler.db.connections import DB_ERRORS, ConnectionSource
from scheduler.domain.webhooks import SECRET_CACHE_TTL_S, new_secret
from scheduler.ids import uuid7


class SigningSecrets:
    """Each namespace's signing secrets, cached; a namespace without one gets one at its first call."""

    def __init__(self, pool: ConnectionSource, *, ttl_s: float = SECRET_CACHE_TTL_S) -> None:
        """Start with an empty cache."""
        self._pool = pool
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[list[str], float]] = {}
        # One load per namespace at a time: thousands of calls starting together share it rather
        # than each taking a connection (no database round trip per call).
        self._loading: dict[str, asyncio.Task[list[str]]] = {}

    async def for_namespace(self, namespace: str) -> list[str]:
        """The secrets to sign a call of ``namespace`` with (a stale copy if the database is away)."""
        cached = self._cache.get(namespace)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        task = self._loading.get(namespace)
        if task is None:
            task = asyncio.create_task(self._load(namespace), name=f"signing-{namespace}")
            self._loading[namespace] = task
            task.add_done_callback(lambda done: self._loaded(namespace, done))
        try:
            # Shielded: a call stopped while waiting must not cancel the load the others wait on.
            return await asyncio.shield(task)
        except DB_ERRORS:
            if cached is not None:
                return cached[0]
            raise

    def forget(self, namespace: str) -> None:
        """Drop the cached secrets of a namespace (its secrets changed)."""
        self._cache.pop(namespace, None)

    async def _load(self, namespace: str) -> list[str]:
        async with self._pool.connection() as conn:
            found = await store.signing_secrets_current(conn, namespace=namespace)
            if not found:
                async with conn.transaction():
                    await store.signing_secret_create(
                        conn, namespace=namespace, secret=new_secret(), grace_s=None, secret_id=uuid7()
                    )
                found = await store.signing_secrets_current(conn, namespace=namespace)
        self._cache[namespace] = (found, time.monotonic() + self._ttl_s)
        return found

    def _loaded(self, namespace: str, done: asyncio.Task[list[str]]) -> None:
        if self._loading.get(namespace) is done:
            del self._loading[namespace]
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have been stopped meanwhile
