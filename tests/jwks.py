"""A stand-in identity provider: keys the test makes, a JWKS server on 127.0.0.1, and tokens signed with them.

The JWK export is written here from the key numbers (RFC 7518), not taken from the library under
test, so a token the service accepts was checked against keys it read the way any issuer writes them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://idp.test/realms/platform"
AUDIENCE = "scheduler"

_CURVES = {"ES256": (ec.SECP256R1(), "P-256", 32), "ES384": (ec.SECP384R1(), "P-384", 48)}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uint(number: int, size: int | None = None) -> str:
    length = size or max(1, (number.bit_length() + 7) // 8)
    return b64url(number.to_bytes(length, "big"))


@dataclass
class Key:
    kid: str
    alg: str
    private: Any

    def public_jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            jwk: dict[str, Any] = {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
        elif isinstance(public, ec.EllipticCurvePublicKey):
            _, crv, size = _CURVES[self.alg]
            point = public.public_numbers()
            jwk = {"kty": "EC", "crv": crv, "x": _uint(point.x, size), "y": _uint(point.y, size)}
        else:
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        jwk |= {"kid": self.kid, "use": "sig"}
        if with_alg:
            jwk["alg"] = self.alg
        return jwk

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def make_key(alg: str, kid: str | None = None) -> Key:
    """A fresh private key for ``alg`` (RS*/PS*: RSA 2048, ES256/384, EdDSA: Ed25519)."""
    if alg.startswith(("RS", "PS")):
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg in _CURVES:
        private = ec.generate_private_key(_CURVES[alg][0])
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return Key(kid or f"{alg.lower()}-{time.monotonic_ns()}", alg, private)


def weak_rsa_key(kid: str) -> Key:
    """An RSA key too short to be trusted (1024 bits), which the service must refuse to use."""
    return Key(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505


def claims(namespace: str = "alpha", *, lifetime_s: float = 3600, **extra: Any) -> dict[str, Any]:
    """The claims of a valid token for ``namespace``; ``extra`` adds or replaces some (None drops one)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": f"service-{namespace}",
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime_s),
        "scheduler_namespace": namespace,
    }
    base.update(extra)
    return {name: value for name, value in base.items() if value is not None}


def sign(key: Key, payload: dict[str, Any], **header: Any) -> str:
    """A token signed with ``key``; ``header`` adds or replaces header fields."""
    return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": key.kid, **header})


def forge(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None = None) -> str:
    """A token built by hand: HS256 over ``secret`` when given, else with an empty signature (alg none)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    signature = b""
    if secret is not None:
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


@dataclass
class Issuer:
    """Keys, and the JWKS server that publishes the public halves of those listed in ``published``."""

    keys: dict[str, Key] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    requests: int = 0
    body: bytes | None = None
    """When set, what the server answers instead of the key set."""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, alg: str, kid: str | None = None, *, publish: bool = True) -> Key:
        key = make_key(alg, kid)
        self.keys[key.kid] = key
        if publish:
            self.published.append(key.kid)
        return key

    def jwks(self) -> bytes:
        return json.dumps({"keys": [self.keys[kid].public_jwk() for kid in self.published]}).encode()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/certs"

    def fetches(self) -> int:
        with self._lock:
            return self.requests

    def start(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with issuer._lock:
                    issuer.requests += 1
                body = issuer.body if issuer.body is not None else issuer.jwks()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Take the server down: its port then refuses connections."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
