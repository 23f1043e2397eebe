"""Authentication: a bearer key names the caller's namespace; SCHEDULER_AUTH=off maps all to `default`."""

from __future__ import annotations

import hashlib
import secrets
import time

from litestar import Response
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from scheduler import store
from scheduler.api.limits import RateLimiter, retry_after
from scheduler.api.problems import problem_response
from scheduler.api.state import NAMESPACE_KEY
from scheduler.config import Settings

DEFAULT_NAMESPACE = "default"
KEY_PREFIX = "sk_"
# Paths anyone may read: probes, metrics and the API's own documentation.
_PUBLIC = ("/healthz", "/readyz", "/metrics", "/docs", "/schema")
# A looked-up key is trusted this long, so a revocation takes effect within it on every API process.
_CACHE_TTL_S = 10.0
_CACHE_MAX = 10_000


def new_key() -> str:
    """Make a key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


class AuthMiddleware:
    """Resolve the namespace of every request, or answer 401 without saying what was wrong.

    With a limiter, each key's requests are also rate limited (429 with Retry-After).
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter | None = None) -> None:
        """Wrap ``app``; start with an empty key cache."""
        self.app = app
        self._cache: dict[bytes, tuple[str, float]] = {}
        self._limiter = limiter

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
            found = await self._namespace(scope)
            if found is None:
                response = problem_response(
                    401,
                    "missing or invalid API key; send Authorization: Bearer <key>",
                    headers={"WWW-Authenticate": 'Bearer realm="scheduler"'},
                )
                await response.to_asgi_response(app=None, request=None)(scope, receive, send)  # type: ignore[arg-type]
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

    async def _namespace(self, scope: Scope) -> tuple[str, bytes] | None:
        """The caller's namespace and the hash of its key; None when the key is missing or unknown."""
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        scheme, _, token = header.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX) or len(token) > 256:  # noqa: PLR2004
            return None
        digest = key_hash(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0], digest
        async with scope["app"].state.pool.connection() as conn:
            namespace = await store.api_key_lookup(conn, key_hash=digest)
        if namespace is None:
            return None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (namespace, now + _CACHE_TTL_S)
        return namespace, digest
