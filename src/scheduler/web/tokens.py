"""Bearer JWTs from the configured issuer: what one looks like, the keys that sign them, and the check.

The API's bearer check and the console's sign-in both verify tokens here, with one verifier (and one
JWKS cache) per API process, kept on the app's state.

A token is told from an API key by its shape: three base64url segments joined by dots, not starting
with `sk_`. A key is `sk_` and base64url characters, which hold no dot, and a JWT's header segment
starts with `ey` (the encoding of `{"`), so neither can be taken for the other.

Keys come from a PEM file or a JWKS URL. The JWKS is fetched at the first token, refreshed in the
background once it is older than its TTL, and again when a token names a `kid` it does not hold, but
never twice within the minimum refresh interval: tokens with made-up `kid`s cost the issuer at most
one fetch per interval. A failed fetch keeps the keys already known. Until a first fetch succeeds,
tokens cannot be checked at all, and the caller answers 503 with Retry-After (the client did nothing
wrong); once keys are known, a token none of them signed is refused like any bad token.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import aiohttp
import jwt
import msgspec
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from litestar.datastructures import State

from scheduler.config import JWT_ALGORITHMS, Settings, jwt_algorithms_fitting, load_jwt_public_key
from scheduler.domain.keys import KEY_PREFIX
from scheduler.domain.names import is_namespace

log = structlog.get_logger("scheduler.auth")

# Identity providers issue tokens of one or two KiB (more with many groups); a longer bearer is
# refused before anything is decoded, as is a header segment longer than `alg`, `kid` and `typ` need.
MAX_TOKEN_LENGTH = 8 * 1024
MAX_HEADER_SEGMENT = 1024
MAX_KID_LENGTH = 256
# Real key sets hold a few keys in a few KiB; anything much bigger is not a key set.
MAX_JWKS_BYTES = 256 * 1024
MAX_JWKS_KEYS = 64
JWKS_TIMEOUT_S = 5.0
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# A verified token is remembered this long (by its hash), so a client that sends the same token
# with every request costs one signature check per minute, not one per request; its `exp` and its
# key's presence in the current set are still checked on every use.
_VERIFIED_TTL_S = 60.0
_VERIFIED_MAX = 10_000
VERIFIER_STATE = "token_verifier"
# Public key types a JWK may have: `oct` (a shared secret) never signs a token we accept.
_ASYMMETRIC_KTY = frozenset({"RSA", "EC", "OKP"})

VerifyingKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


class TokenRefusedError(Exception):
    """Not a valid token of the issuer; the message says why, for the log and never for the caller."""


class KeysUnavailableError(Exception):
    """No signing key has been loaded yet (the JWKS could not be fetched), so no token can be checked."""

    def __init__(self, retry_after_s: float) -> None:
        """Say how long until the keys will be fetched again."""
        super().__init__(f"no signing key loaded; next fetch in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class Claims(msgspec.Struct, frozen=True):
    """What a verified token says about its bearer."""

    namespace: str
    subject: str
    """The token's `sub`, empty when it has none."""
    expires_at: float
    """The token's `exp`, in seconds since the epoch."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A public key and the algorithms it may verify (its JWK's `alg` alone, when it names one)."""

    key: VerifyingKey
    algorithms: frozenset[str]


def signing_key(public: object, only: str | None = None) -> SigningKey | None:
    """``public`` as a key for the algorithms it fits (``only`` of them, if given); None if it fits none.

    A private key, a key of another kind, or an RSA key under 2048 bits fits none.
    """
    if not isinstance(
        public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
    ):
        return None
    algorithms = jwt_algorithms_fitting(public)
    if only is not None:
        algorithms &= {only}
    return SigningKey(public, algorithms) if algorithms else None


class KeySource(Protocol):
    """Where the verifier finds the key of a token's `kid` and `alg`."""

    async def find(self, kid: str | None, algorithm: str) -> SigningKey | None:
        """The key that verifies this token, None when there is none; KeysUnavailableError before any."""
        ...  # pragma: no cover - a protocol


def could_be_token(text: str) -> bool:
    """Whether ``text`` has the shape of a signed JWT (checked before anything is decoded)."""
    if len(text) > MAX_TOKEN_LENGTH or text.startswith(KEY_PREFIX):
        return False
    parts = text.split(".")
    return (
        len(parts) == 3  # noqa: PLR2004 - header, payload, signature
        and len(parts[0]) <= MAX_HEADER_SEGMENT
        and all(_SEGMENT.fullmatch(part) for part in parts)
    )


def _pick(keys: tuple[SigningKey, ...], algorithm: str) -> SigningKey | None:
    return next((key for key in keys if algorithm in key.algorithms), None)


class PemKey:
    """The one key of a PEM file, read when first needed (and retried if the file went missing)."""

    def __init__(self, path: str, *, retry_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Use the key in ``path``; a failed read is tried again after ``retry_s``."""
        self.path = path
        self._retry_s = retry_s
        self._clock = clock
        self._key: SigningKey | None = None
        self._tried_at: float | None = None

    async def find(self, kid: str | None, algorithm: str) -> SigningKey | None:  # noqa: ARG002 - one key
        """The file's key when it verifies ``algorithm``; the `kid` is not looked at."""
        if self._key is None:
            now = self._clock()
            if self._tried_at is not None and now - self._tried_at < self._retry_s:
                raise KeysUnavailableError(self._tried_at + self._retry_s - now)
            self._tried_at = now
            try:
                public = load_jwt_public_key(self.path)
            except (OSError, ValueError) as exc:
                log.error("jwt_key_file_unreadable", path=self.path, error=str(exc))  # noqa: TRY400
                raise KeysUnavailableError(self._retry_s) from None
            self._key = signing_key(public)
            if self._key is None:
                log.error("jwt_key_file_unusable", path=self.path)
                raise KeysUnavailableError(self._retry_s)
        return _pick((self._key,), algorithm)


class _KeySet(msgspec.Struct, frozen=True):
    by_kid: dict[str, tuple[SigningKey, ...]]
    unnamed: tuple[SigningKey, ...]
    """Keys published without a `kid`."""

    def count(self) -> int:
        return sum(len(keys) for keys in self.by_kid.values()) + len(self.unnamed)

    def find(self, kid: str | None, algorithm: str) -> SigningKey | None:
        if kid is not None and kid in self.by_kid:
            return _pick(self.by_kid[kid], algorithm)
        # A token without a `kid` (or a set whose keys have none) can only mean the one key there is.
        if self.count() == 1:
            return _pick((*self.unnamed, *(k for keys in self.by_kid.values() for k in keys)), algorithm)
        return None


def _jwk_key(entry: Any) -> SigningKey | None:
    """One JWK of a set as a key for signatures, or None for what must not be used (or cannot be)."""
    if not isinstance(entry, dict) or entry.get("kty") not in _ASYMMETRIC_KTY:
        return None
    if entry.get("use", "sig") != "sig":
        return None
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    named = entry.get("alg")
    if named is not None and named not in JWT_ALGORITHMS:
        return None
    try:
        public = jwt.PyJWK(entry).key
    except Exception:  # any key the library cannot read is one we skip, whatever it raises
        return None
    return signing_key(public, named)


def parse_jwks(body: bytes) -> _KeySet:
    """The usable signing keys of a JWKS document; ValueError when it is not one or holds none."""
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("no `keys` list")  # noqa: TRY004 - a bad document, as any other
    by_kid: dict[str, tuple[SigningKey, ...]] = {}
    unnamed: list[SigningKey] = []
    for entry in entries[:MAX_JWKS_KEYS]:
        key = _jwk_key(entry)
        if key is None:
            continue
        kid = entry.get("kid")
        if isinstance(kid, str):
            by_kid[kid] = (*by_kid.get(kid, ()), key)
        else:
            unnamed.append(key)
    found = _KeySet(by_kid, tuple(unnamed))
    if found.count() == 0:
        raise ValueError("no usable signing key (asymmetric, for signatures, RSA of 2048 bits or more)")
    return found


async def fetch_jwks(url: str) -> _KeySet:
    """Download and parse a JWKS; redirects are not followed, and the body is capped in size."""
    timeout = aiohttp.ClientTimeout(total=JWKS_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, allow_redirects=False, headers={"Accept": "application/json"}) as response,
    ):
        if response.status != 200:  # noqa: PLR2004
            raise ValueError(f"answered HTTP {response.status}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > MAX_JWKS_BYTES:
                raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
            chunks.append(chunk)
    return parse_jwks(b"".join(chunks))


class JwksKeys:
    """The issuer's keys from its JWKS URL, cached; refreshed on a TTL and on unknown `kid`s, bounded."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float,
        min_refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Fetch from ``url``: again after ``ttl_s``, and never twice within ``min_refresh_s``."""
        self.url = url
        self._ttl_s = ttl_s
        self._min_refresh_s = min_refresh_s
        self._clock = clock
        self._keys: _KeySet | None = None
        self._loaded_at = 0.0
        self._tried_at: float | None = None
        self._fetching: asyncio.Task[None] | None = None

    async def find(self, kid: str | None, algorithm: str) -> SigningKey | None:
        """The key for a token: from the cache, else after one refresh if one is allowed now."""
        now = self._clock()
        if self._keys is not None and now - self._loaded_at >= self._ttl_s and self._may_fetch(now):
            self._start_fetch()  # in the background: the keys known now answer meanwhile
        found = self._keys.find(kid, algorithm) if self._keys is not None else None
        if found is None:
            fetching = self._fetching
            if fetching is None and self._may_fetch(now):
                fetching = self._start_fetch()
            if fetching is not None:
                await asyncio.shield(fetching)  # one fetch for all the requests that wait on it
                found = self._keys.find(kid, algorithm) if self._keys is not None else None
        if found is None and self._keys is None:
            raise KeysUnavailableError(self._next_fetch_in(self._clock()))
        return found

    def _may_fetch(self, now: float) -> bool:
        return self._fetching is None and (
            self._tried_at is None or now - self._tried_at >= self._min_refresh_s
        )

    def _next_fetch_in(self, now: float) -> float:
        return 0.0 if self._tried_at is None else max(0.0, self._tried_at + self._min_refresh_s - now)

    def _start_fetch(self) -> asyncio.Task[None]:
        self._tried_at = self._clock()
        task = asyncio.get_running_loop().create_task(self._fetch())
        self._fetching = task
        return task

    async def _fetch(self) -> None:
        try:
            keys = await fetch_jwks(self.url)
        except Exception as exc:  # an outage or a bad answer keeps the keys known so far
            log.warning(
                "jwks_fetch_failed",
                url=self.url,
                error=str(exc) or type(exc).__name__,
                keys_kept=0 if self._keys is None else self._keys.count(),
            )
        else:
            self._keys = keys
            self._loaded_at = self._clock()
            log.info("jwks_loaded", url=self.url, keys=keys.count())
        finally:
            self._fetching = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class _Verified:
    claims: Claims
    kid: str | None
    algorithm: str
    key: SigningKey
    until: float


class TokenVerifier:
    """Checks a bearer JWT: shape, algorithm, signature, `iss`, `aud`, `exp`, `nbf`, namespace claim."""

    def __init__(self, settings: Settings, keys: KeySource) -> None:
        """Check tokens as ``settings`` say, with keys from ``keys``."""
        if settings.auth_jwt_issuer is None or settings.auth_jwt_audience is None:
            raise ValueError("a token verifier needs an issuer and an audience")
        self.issuer = settings.auth_jwt_issuer
        self.audience = settings.auth_jwt_audience
        self.algorithms = frozenset(settings.auth_jwt_algorithms)
        self.namespace_claim = settings.auth_jwt_namespace_claim
        self.leeway_s = settings.auth_jwt_leeway_s
        self.keys = keys
        self._verified: dict[bytes, _Verified] = {}

    async def verify(self, token: str, now: float) -> Claims:
        """The claims of a valid token at ``now`` (epoch seconds); TokenRefusedError saying why not."""
        if not could_be_token(token):
            raise TokenRefusedError("not shaped like a JWT")
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        # Still signed by a key of the current set, too: a withdrawn key ends its tokens at once.
        if (
            known is not None
            and known.until > time.monotonic()
            and await self.keys.find(known.kid, known.algorithm) is known.key
        ):
            self._check_expiry(known.claims.expires_at, now)
            return known.claims
        claims, kid, algorithm, key = await self._verify(token, now)
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[digest] = _Verified(claims, kid, algorithm, key, time.monotonic() + _VERIFIED_TTL_S)
        return claims

    async def _verify(self, token: str, now: float) -> tuple[Claims, str | None, str, SigningKey]:
        try:
            header = jwt.get_unverified_header(token)
        except Exception as exc:  # a header the library cannot read is a bad token, never a 500
            raise TokenRefusedError(f"unreadable header ({exc})") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise TokenRefusedError(f"algorithm {algorithm!r} is not accepted")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
            raise TokenRefusedError("kid is not a short string")
        if "crit" in header:
            raise TokenRefusedError("critical header extensions are not understood")
        key = await self.keys.find(kid, algorithm)
        if key is None:
            raise TokenRefusedError(f"no known key for kid {kid!r} and {algorithm}")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                # The times are checked below against the app's clock, not the host's.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["exp"]},
            )
        except Exception as exc:  # whatever the library refuses, however it says so
            raise TokenRefusedError(f"{type(exc).__name__}: {exc}") from None
        return self._claims(payload, now), kid, algorithm, key

    def _check_expiry(self, expires: float, now: float) -> None:
        if now >= expires + self.leeway_s:
            raise TokenRefusedError("expired")

    def _claims(self, payload: dict[str, Any], now: float) -> Claims:
        expires = _number(payload.get("exp"))
        if expires is None:
            raise TokenRefusedError("exp is not a number")
        self._check_expiry(expires, now)
        if "nbf" in payload:
            not_before = _number(payload["nbf"])
            if not_before is None or now < not_before - self.leeway_s:
                raise TokenRefusedError("not valid yet (or no numeric nbf)")
        namespace = payload.get(self.namespace_claim)
        if not isinstance(namespace, str) or not is_namespace(namespace):
            raise TokenRefusedError(f"claim {self.namespace_claim!r} does not name a namespace")
        subject = payload.get("sub")
        return Claims(namespace, subject if isinstance(subject, str) else "", expires)


def verifier_of(state: State, settings: Settings) -> TokenVerifier | None:
    """The app's token verifier, made at its first use; None when tokens are not configured."""
    if settings.auth_jwt_issuer is None:
        return None
    found: TokenVerifier | None = state.get(VERIFIER_STATE)
    if found is None:
        keys: KeySource
        if settings.auth_jwt_jwks_url is not None:
            keys = JwksKeys(
                settings.auth_jwt_jwks_url,
                ttl_s=settings.auth_jwt_jwks_ttl_s,
                min_refresh_s=settings.auth_jwt_jwks_min_refresh_s,
            )
        else:
            path = settings.auth_jwt_public_key_file or ""
            keys = PemKey(path, retry_s=settings.auth_jwt_jwks_min_refresh_s)
        found = state[VERIFIER_STATE] = TokenVerifier(settings, keys)
    return found
