"""Authentication: a bearer key or JWT names the caller's namespace; SCHEDULER_AUTH=off means `default`."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import structlog
from litestar import Response
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send
from psycopg_pool import PoolTimeout

from scheduler.api.limits import RateLimiter, retry_after
from scheduler.api.problems import problem_response
from scheduler.config import Settings
from scheduler.db import store
from scheduler.db.connections import DB_ERRORS, Pool
from scheduler.domain.keys import MAX_KEY_LENGTH, hash_if_key
from scheduler.domain.names import DEFAULT_NAMESPACE
from scheduler.web.state import NAMESPACE_KEY, Clock
from scheduler.web.tokens import (
    MAX_TOKEN_LENGTH,
    KeysUnavailableError,
    TokenRefusedError,
    TokenVerifier,
    could_be_token,
    verifier_of,
)

log = structlog.get_logger("scheduler.auth")

# Paths anyone may read: probes, metrics and the API's own documentation.
# The web console (/ui) signs in with its own cookie and scopes itself (scheduler.ui.session).
_PUBLIC = ("/healthz", "/readyz", "/metrics", "/docs", "/schema", "/ui")
# A looked-up key is trusted this long, so a revocation takes effect within it on every API process.
_CACHE_TTL_S = 10.0
_CACHE_MAX = 10_000
# Longer Authorization headers are refused unread: no key or token of ours is that long.
_MAX_AUTHORIZATION = len("Bearer ") + max(MAX_KEY_LENGTH, MAX_TOKEN_LENGTH)


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
    a while, so guessing keys costs the database nothing. Bearer JWTs (when an issuer is configured)
    go through the same two limits: a refused token counts as a failed authentication, and a valid
    one is rate limited per namespace and subject.
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

    def _too_many_failures(self, settings: Settings, address: bytes) -> Response[bytes] | None:
        """The 429 for an address past its failed authentications; None while it may try."""
        wait_s = self._failure_limiter(settings).wait_s(address)
        if wait_s <= 0:
            return None
        return problem_response(
            429,
            "too many failed authentications from this address; "
            f"retry after {retry_after(wait_s)} s with a valid key",
            kind="rate-limited",
            headers={"Retry-After": retry_after(wait_s)},
        )

    async def _authenticate(self, scope: Scope, settings: Settings) -> tuple[str, bytes] | Response[bytes]:
        """The caller's namespace and rate-limit identity, or the 401 (or 429, 503) to answer with."""
        bearer = _bearer(scope)
        if bearer is None:
            return _unauthorized()
        digest = hash_if_key(bearer)
        if digest is None:  # not a key of ours: a token, if tokens are on and it has a token's shape
            verifier = verifier_of(scope["app"].state, settings)
            if verifier is None or not could_be_token(bearer):
                return _unauthorized()  # nothing to look up or check, nothing to limit
            return await self._authenticate_token(scope, settings, verifier, bearer)
        return await self._authenticate_key(scope, settings, digest)

    async def _authenticate_key(
        self, scope: Scope, settings: Settings, digest: bytes
    ) -> tuple[str, bytes] | Response[bytes]:
        """Look a key's hash up (cached); an unknown one counts against its address."""
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0], digest
        address = _client_address(scope)
        refusal = self._too_many_failures(settings, address)
        if refusal is not None:
            return refusal
        known_unknown = self._unknown.get(digest, 0.0) > now
        namespace = None
        if not known_unknown:
            namespace = await _lookup(scope["app"].state.pool, digest)
        if namespace is None:
            self._failure_limiter(settings).take(address)
            _remember(self._unknown, digest, now + _CACHE_TTL_S)
            return _unauthorized()
        _remember(self._cache, digest, (namespace, now + _CACHE_TTL_S))
        return namespace, digest

    async def _authenticate_token(
        self, scope: Scope, settings: Settings, verifier: TokenVerifier, token: str
    ) -> tuple[str, bytes] | Response[bytes]:
        """Verify a bearer JWT; a refused one counts against its address like an unknown key."""
        address = _client_address(scope)
        refusal = self._too_many_failures(settings, address)
        if refusal is not None:
            return refusal
        clock: Clock = scope["app"].state.clock
        try:
            claims = await verifier.verify(token, clock().timestamp())
        except KeysUnavailableError as exc:
            wait = retry_after(max(1.0, exc.retry_after_s))
            return problem_response(
                503,
                "bearer tokens cannot be checked yet: the identity provider's signing keys "
                f"could not be fetched; retry after {wait} s",
                kind="identity-provider-unavailable",
                headers={"Retry-After": wait},
            )
        except TokenRefusedError as exc:
            self._failure_limiter(settings).take(address)
            log.info("token_refused", reason=str(exc), client=address.decode())
            return _unauthorized()
        # A token's requests are limited per subject of its namespace, as a key's are per key.
        identity = b"jwt\0" + claims.namespace.encode() + b"\0" + claims.subject.encode()
        return claims.namespace, hashlib.sha256(identity).digest()


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


def _bearer(scope: Scope) -> str | None:
    """The request's bearer credential; None when it sends none, or one longer than any of ours."""
    header = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            header = value
            break
    if len(header) > _MAX_AUTHORIZATION:
        return None
    scheme, _, credential = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip()
