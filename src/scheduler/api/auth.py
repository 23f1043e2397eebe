"""Authentication: a bearer key names the caller's namespace; SCHEDULER_AUTH=off maps all to `default`."""

from __future__ import annotations

import time
from typing import Any

from litestar import Response
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send
from psycopg_pool import PoolTimeout

from scheduler.api.limits import RateLimiter, retry_after
from scheduler.api.problems import problem_response
from scheduler.config import Settings
from scheduler.db import store
from scheduler.db.connections import DB_ERRORS, Pool
from scheduler.domain.keys import hash_if_key
from scheduler.domain.names import DEFAULT_NAMESPACE
from scheduler.web.state import NAMESPACE_KEY

# Paths anyone may read: probes, metrics and the API's own documentation.
# The web console (/ui) signs in with its own cookie and scopes itself (scheduler.ui.session).
_PUBLIC = ("/healthz", "/readyz", "/metrics", "/docs", "/schema", "/ui")
# A looked-up key is trusted this long, so a revocation takes effect within it on every API process.
_CACHE_TTL_S = 10.0
_CACHE_MAX = 10_000


def _client_address(scope: Scope) -> bytes:
    client = scope.get("client")
    return client[0].encode() if client else b""


def _unauthorized() -> Response[bytes]:
    return problem_response(
        401,
        "missing or invalid API key; send Authorization: Bearer <key>",
        headers={"WWW-Authenticate": 'Bearer realm="scheduler"'},
    )


class AuthMiddleware:
    """Resolve the namespace of every request, or answer 401 without saying what was wrong.

    With a limiter, each key's requests are also rate limited (429 with Retry-After). Failed
    authentications are limited too, per client address: past SCHEDULER_AUTH_FAILURE_BURST of them
    an address gets 429 without its keys being looked up, and a key found unknown is remembered for
    a while, so guessing keys costs the database nothing.
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter | None = None) -> None:
        """Wrap ``app``; start with empty key caches."""
        self.app = app
        self._cache: dict[bytes, tuple[str, float]] = {}
        self._unknown: dict[bytes, float] = {}
        self._limiter = limiter
        self._failures: RateLimiter | None = None  # built from the settings at the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Set the namespace on the scope, then pass the request on."""
        next_app = self.app
        if scope["type"] != ScopeType.HTTP:
            await next_app(scope, receive, send)
            return
        path: str = scope["path"]
        settings: Settings = scope["app"].state.settings
        if settings.auth == "off":
            scope[NAMESPACE_KEY] = DEFAULT_NAMESPACE  # type: ignore[literal-required]
        elif not path.startswith(_PUBLIC):
            found = await self._authenticate(scope, settings)
            if isinstance(found, Response):
                await found.to_asgi_response(app=None, request=None)(scope, receive, send)  # type: ignore[arg-type]
                return
            namespace, digest = found
            refusal = self._rate_limited(digest)
            if refusal is not None:
                await refusal.to_asgi_response(app=None, request=None)(scope, receive, send)  # type: ignore[arg-type]
                return
            scope[NAMESPACE_KEY] = namespace  # type: ignore[literal-required]
        await next_app(scope, receive, send)

    def _rate_limited(self, digest: bytes) -> Response[bytes] | None:
        """The 429 for a key that has used up its tokens; None while it has one to spend."""
        if self._limiter is None:
            return None
        wait_s = self._limiter.take(digest)
        if wait_s <= 0:
            return None
        return problem_response(
            429,
            f"rate limit exceeded: each key may make {self._limiter.rate_per_s:g} requests per second "
            f"(bursts of {self._limiter.burst}); retry after {retry_after(wait_s)} s",
            kind="rate-limited",
            headers={"Retry-After": retry_after(wait_s)},
        )

    def _failure_limiter(self, settings: Settings) -> RateLimiter:
        if self._failures is None:
            self._failures = RateLimiter(settings.auth_failure_rate_per_s, settings.auth_failure_burst)
        return self._failures

    async def _authenticate(self, scope: Scope, settings: Settings) -> tuple[str, bytes] | Response[bytes]:
        """The caller's namespace and key hash, or the 401 (or 429) to answer with."""
        digest = _bearer_key_hash(scope)
        if digest is None:  # no key, or not one of ours: nothing to look up, nothing to limit
            return _unauthorized()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0], digest
        failures = self._failure_limiter(settings)
        address = _client_address(scope)
        wait_s = failures.wait_s(address)
        if wait_s > 0:
            return problem_response(
                429,
                "too many failed authentications from this address; "
                f"retry after {retry_after(wait_s)} s with a valid key",
                kind="rate-limited",
                headers={"Retry-After": retry_after(wait_s)},
            )
        known_unknown = self._unknown.get(digest, 0.0) > now
        namespace = None
        if not known_unknown:
            namespace = await _lookup(scope["app"].state.pool, digest)
        if namespace is None:
            failures.take(address)
            _remember(self._unknown, digest, now + _CACHE_TTL_S)
            return _unauthorized()
        _remember(self._cache, digest, (namespace, now + _CACHE_TTL_S))
        return namespace, digest


async def _lookup(pool: Pool, digest: bytes) -> str | None:
    """The namespace of a key hash; a lookup that met a lost connection is a read, so it runs once more."""
    try:
        async with pool.connection() as conn:
            return await store.api_key_lookup(conn, key_hash=digest)
    except PoolTimeout:
        raise
    except DB_ERRORS:
        async with pool.connection() as conn:
            return await store.api_key_lookup(conn, key_hash=digest)


def _remember(cache: dict[bytes, Any], digest: bytes, value: Any) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[digest] = value


def _bearer_key_hash(scope: Scope) -> bytes | None:
    """The hash of the request's bearer key; None when it sends none, or one that is not a key of ours."""
    header = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            header = value
            break
    scheme, _, token = header.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        return None
    return hash_if_key(token)
