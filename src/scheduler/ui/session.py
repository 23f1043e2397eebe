"""Console sessions: a signed cookie naming the API key's hash, and CSRF tokens bound to it.

The cookie never holds the key: it carries the SHA-256 of the key (what `api_keys` stores), a random
session id and an expiry, signed with HMAC-SHA256 under a random secret kept in the database (one row,
made by the first API process that needs it, so every worker and replica agrees with nothing to
configure). Each request looks the hash up like the API's bearer check does, so a revoked key ends
its sessions. Signed in with a bearer token from the identity provider instead, the cookie names the
namespace the token granted and lasts no longer than the token (which cannot be revoked; a session
ends with it, or as soon as tokens are no longer configured). A CSRF token is the HMAC of the
session id under the same secret: a page from another origin can neither read it nor compute it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

import msgspec
from litestar import Request

from scheduler.db import store
from scheduler.domain.keys import hash_if_key
from scheduler.domain.names import DEFAULT_NAMESPACE
from scheduler.web.state import conn_for, now_of, settings_of
from scheduler.web.tokens import TokenRefusedError, could_be_token, verifier_of

COOKIE = "scheduler_console"
SESSION_TTL_S = 12 * 3600
# A key lookup is trusted this long (like the API's cache), so revocation ends a session within it.
_LOOKUP_TTL_S = 10.0
_LOOKUP_MAX = 10_000
_SECRET_STATE = "console_secret"  # noqa: S105 - a state key, not a secret
_LOOKUP_STATE = "console_key_cache"


class SessionData(msgspec.Struct, array_like=True, frozen=True):
    """What the cookie says, once its signature checks out."""

    sid: str
    key_hash: str
    """Hex SHA-256 of the API key; empty before sign-in (the session still carries CSRF tokens)."""
    expires: int
    namespace: str = ""
    """The namespace a verified bearer token granted, when signed in with one (key_hash is then empty)."""


class Viewer(msgspec.Struct, frozen=True):
    """Who is looking: the namespace every query is scoped to, and the session for CSRF."""

    namespace: str | None
    """None when auth is required and the session is not signed in."""
    session: SessionData
    fresh_cookie: str | None
    """A cookie value to set on the response (a session just started)."""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(SessionData).decode


async def secret_of(request: Request[Any, Any, Any]) -> bytes:
    """The console's signing secret, read from the database once per process."""
    state = request.app.state
    found: bytes | None = state.get(_SECRET_STATE)
    if found is None:
        async with conn_for(request) as conn:
            found = await store.console_secret(conn, candidate=secrets.token_bytes(32))
        state[_SECRET_STATE] = found
    return found


def _mac(secret: bytes, purpose: bytes, message: bytes) -> bytes:
    return hmac.new(secret, purpose + b"\0" + message, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(secret: bytes, data: SessionData) -> str:
    """The cookie value of a session: payload and signature, both URL-safe base64."""
    payload = _encode(data)
    return f"{_b64(payload)}.{_b64(_mac(secret, b'session', payload))}"


def unseal(secret: bytes, value: str, now: float) -> SessionData | None:
    """The session a cookie value holds; None when it is forged, garbled or expired."""
    payload_text, _, mac_text = value.partition(".")
    try:
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (ValueError, TypeError):
        return None
    if not hmac.compare_digest(mac, _mac(secret, b"session", payload)):
        return None
    try:
        data = _decode(payload)
    except msgspec.DecodeError:
        return None
    return data if data.expires > now else None


def new_session(
    key_digest: bytes | None, now: float, *, namespace: str = "", expires_by: float | None = None
) -> SessionData:
    """A fresh session (a new id on every sign-in, so a planted cookie cannot be ridden).

    A session a token started names its ``namespace`` and ends by ``expires_by``, the token's `exp`.
    """
    expires = int(now) + SESSION_TTL_S
    if expires_by is not None:
        expires = min(expires, int(expires_by))
    return SessionData(
        sid=secrets.token_urlsafe(18),
        key_hash=key_digest.hex() if key_digest else "",
        expires=expires,
        namespace=namespace,
    )


async def token_session(request: Request[Any, Any, Any], text: str) -> SessionData | None:
    """A session for a valid bearer token typed into the sign-in form; None when it is not one.

    KeysUnavailableError when the identity provider's keys were never fetched.
    """
    token = text.strip()
    verifier = verifier_of(request.app.state, settings_of(request))
    if verifier is None or not could_be_token(token):
        return None
    try:
        claims = await verifier.verify(token, now_of(request).timestamp())
    except TokenRefusedError:
        return None
    return new_session(None, time.time(), namespace=claims.namespace, expires_by=claims.expires_at)


def csrf_token(secret: bytes, session: SessionData) -> str:
    """The token every form of this session carries."""
    return _b64(_mac(secret, b"csrf", session.sid.encode()))


def csrf_valid(secret: bytes, session: SessionData, token: str) -> bool:
    """Whether a submitted token is this session's."""
    return hmac.compare_digest(token.encode(), csrf_token(secret, session).encode())


def digest_of_key(key: str) -> bytes | None:
    """The stored hash of a key typed into the sign-in form; None when it cannot be a key."""
    return hash_if_key(key.strip())


async def namespace_of_key(request: Request[Any, Any, Any], digest: bytes) -> str | None:
    """The namespace of a live key with this hash (cached briefly, like the API's check)."""
    cache: dict[bytes, tuple[str | None, float]] = request.app.state.setdefault(_LOOKUP_STATE, {})
    now = time.monotonic()
    cached = cache.get(digest)
    if cached is not None and cached[1] > now:
        return cached[0]
    async with conn_for(request) as conn:
        namespace = await store.api_key_lookup(conn, key_hash=digest)
    if len(cache) >= _LOOKUP_MAX:
        cache.clear()
    cache[digest] = (namespace, now + _LOOKUP_TTL_S)
    return namespace


def forget_key(request: Request[Any, Any, Any], digest: bytes) -> None:
    """Drop a cached lookup (sign-in must see a key created a moment ago)."""
    cache: dict[bytes, tuple[str | None, float]] = request.app.state.setdefault(_LOOKUP_STATE, {})
    cache.pop(digest, None)


async def viewer_of(request: Request[Any, Any, Any]) -> Viewer:
    """Resolve the session cookie into a viewer, starting an anonymous session when there is none."""
    secret = await secret_of(request)
    now = time.time()
    raw = request.cookies.get(COOKIE)
    session = unseal(secret, raw, now) if raw else None
    fresh = None
    if session is None:
        session = new_session(None, now)
        fresh = seal(secret, session)
    if settings_of(request).auth == "off":
        return Viewer(DEFAULT_NAMESPACE, session, fresh)
    namespace = None
    if session.key_hash:
        namespace = await namespace_of_key(request, bytes.fromhex(session.key_hash))
    elif session.namespace and settings_of(request).auth_jwt_issuer is not None:
        namespace = session.namespace  # granted by a token; the session expires with it
    return Viewer(namespace, session, fresh)


def cookie_secure(request: Request[Any, Any, Any]) -> bool:
    """Mark the cookie Secure when the console is reached over https (directly or via a proxy)."""
    if request.url.scheme == "https":
        return True
    return request.headers.get("x-forwarded-proto", "").lower() == "https"
