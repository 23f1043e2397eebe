"""Settings read from `SCHEDULER_*` environment variables, validated once at start-up."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal, TypeAlias
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A `SCHEDULER_*` variable holds a value the service cannot use; the message names it."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob of the service; the field names are the variables without the `SCHEDULER_` prefix."""

    database_url: str | None = None
    """PostgreSQL connection string; None means the embedded server (make run, tests)."""
    host: str = "127.0.0.1"
    port: int = 8000
    api_workers: int = 1
    auth: Literal["required", "off"] = "required"
    rate_limit_per_s: int = 50
    """Requests per second each API key may make to one API worker process (its token bucket refill)."""
    rate_limit_burst: int = 100
    """Requests a rested key may make at once before the per-second rate applies (its bucket size)."""
    auth_failure_rate_per_s: int = 1
    """Failed authentications (unknown `sk_` keys) a client address may make per second after its burst."""
    auth_failure_burst: int = 20
    """Failed authentications a client address may make at once; past them it gets 429 and no key lookup."""
    auth_jwt_issuer: str | None = None
    """The `iss` bearer JWTs must carry; set, it turns tokens on beside API keys."""
    auth_jwt_audience: str | None = None
    """The `aud` bearer JWTs must carry (required with the issuer)."""
    auth_jwt_jwks_url: str | None = None
    """Where the issuer publishes its signing keys (https, or http to a loopback address)."""
    auth_jwt_public_key_file: str | None = None
    """A PEM public key (or certificate) that signs the tokens, instead of a JWKS URL."""
    auth_jwt_namespace_claim: str = "scheduler_namespace"
    """The claim that names the token's namespace."""
    auth_jwt_algorithms: tuple[str, ...] = ("RS256", "ES256")
    """The signature algorithms accepted; asymmetric ones only."""
    auth_jwt_leeway_s: float = 30.0
    """Clock skew allowed when `exp` and `nbf` are checked."""
    auth_jwt_jwks_ttl_s: float = 300.0
    """How old the fetched JWKS may grow before a request starts a refresh in the background."""
    auth_jwt_jwks_min_refresh_s: float = 30.0
    """Shortest time between two JWKS fetches, so tokens with made-up `kid`s cannot hammer the issuer."""
    namespace_job_quota: int = 100_000
    """Most jobs one namespace may hold; creating one more answers 422."""
    http_allow_nets: tuple[Network, ...] = ()
    """Networks outbound calls may reach despite the address rules."""
    http_record_exchange: Literal["all", "failures", "off"] = "all"
    """Which HTTP runs keep the request sent and the response's headers (`GET /runs/{id}`): `all`,
    `failures` (runs that did not succeed), or `off`; fewer make smaller run rows and cheaper fires."""
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_port: int | None = None
    metrics_max_namespaces: int = 100
    """Namespaces a process labels its series with by name; the ones it meets after them share `_other`."""
    runner_concurrency: int = 1000
    """HTTP actions in flight per runner (SPEC 7): webhooks mostly wait on the network, not the CPU."""
    claim_batch: int = 500
    """Most due jobs claimed in one transaction."""
    poll_interval_s: float = 1.0
    """Longest sleep between claims when nothing is due sooner and no notification arrives."""
    lease_s: float = 30.0
    """How long a claimed run stays owned without a heartbeat."""
    claim_lookahead_s: float = 0.5
    """How long before its slot an HTTP job may be claimed, so its call is ready to start at the slot
    (never before it); 0 claims only what is due. At most a tenth of the lease (set higher, it is
    refused; left unset, the runner uses less under a short lease)."""
    shutdown_grace_s: float = 30.0
    run_retention_days: int = 30
    db_pool_max: int = 16
    """Most database connections one API worker opens."""
    db_max_lifetime_s: float = 1800.0
    """Longest a database connection is kept, so connections follow the URL after a failover."""
    database_pooler: Literal["none", "session", "transaction"] = "none"
    """What sits between the service and PostgreSQL: `transaction` (PgBouncer's transaction mode)
    turns server-side prepared statements off and LISTEN over to `listen_database_url`."""
    listen_database_url: str | None = None
    """Where runners LISTEN for wakes and cancels; the database URL unless the pooler is `transaction`,
    where unset means no LISTEN: runners poll every `poll_interval_s` instead."""
    runner_name: str = ""
    """How a runner names itself in run rows; host:pid unless set."""
    url: str = "http://127.0.0.1:8000"
    """Base URL of the API that the `scheduler jobs` client talks to."""
    api_key: str | None = None
    """Bearer key the `scheduler jobs` client sends; unset sends none (for SCHEDULER_AUTH=off)."""

    def listen_url(self) -> str | None:
        """Where a runner LISTENs; None when it must poll (transaction pooling and no direct URL)."""
        if self.listen_database_url:
            return self.listen_database_url
        return None if self.database_pooler == "transaction" else self.database_url

    def runner_id(self) -> str:
        """Return the name this runner process writes into the runs it owns."""
        return self.runner_name or f"{socket.gethostname()}:{os.getpid()}"


_PREFIX = "SCHEDULER_"

# Integer and float settings and the inclusive range each accepts.
_INT_RANGES: Mapping[str, tuple[int, int]] = {
    "port": (1, 65535),
    "api_workers": (1, 64),
    "metrics_port": (1, 65535),
    "metrics_max_namespaces": (1, 10_000),
    "runner_concurrency": (1, 10_000),
    "claim_batch": (1, 10_000),
    "run_retention_days": (1, 3650),
    "db_pool_max": (1, 1000),
    "rate_limit_per_s": (1, 1_000_000),
    "rate_limit_burst": (1, 1_000_000),
    "auth_failure_rate_per_s": (1, 1_000_000),
    "auth_failure_burst": (1, 1_000_000),
    "namespace_job_quota": (1, 100_000_000),
}
_FLOAT_RANGES: Mapping[str, tuple[float, float]] = {
    "poll_interval_s": (0.01, 60.0),
    "lease_s": (1.0, 3600.0),
    "claim_lookahead_s": (0.0, 60.0),
    "shutdown_grace_s": (0.0, 3600.0),
    "db_max_lifetime_s": (10.0, 86_400.0),
    "auth_jwt_leeway_s": (0.0, 300.0),
    "auth_jwt_jwks_ttl_s": (10.0, 86_400.0),
    "auth_jwt_jwks_min_refresh_s": (1.0, 3600.0),
}


def _parse_nets(name: str, raw: str) -> tuple[Network, ...]:
    nets: list[Network] = []
    for part in raw.split(","):
        item = part.strip()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{name}: {item!r} is not a CIDR network ({exc})") from None
    return tuple(nets)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment, raising ConfigError naming the first bad variable."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for field in fields(Settings):
        name = _PREFIX + field.name.upper()
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        if field.name in _INT_RANGES:
            low, high = _INT_RANGES[field.name]
            try:
                number = int(raw)
            except ValueError:
                raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
            if not low <= number <= high:
                raise ConfigError(f"{name}: must be between {low} and {high}, got {number}")
            values[field.name] = number
        elif field.name in _FLOAT_RANGES:
            low_f, high_f = _FLOAT_RANGES[field.name]
            try:
                real = float(raw)
            except ValueError:
                raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
            if not low_f <= real <= high_f:
                raise ConfigError(f"{name}: must be between {low_f:g} and {high_f:g}, got {raw}")
            values[field.name] = real
        elif field.name == "http_allow_nets":
            values[field.name] = _parse_nets(name, raw)
        elif field.name == "auth_jwt_algorithms":
            values[field.name] = _parse_jwt_algorithms(name, raw)
        elif field.name in _CHOICES:
            choice = raw.strip().lower()
            if choice not in _CHOICES[field.name]:
                raise ConfigError(f"{name}: must be one of {', '.join(_CHOICES[field.name])}, got {raw!r}")
            values[field.name] = choice
        else:
            values[field.name] = raw
    settings = Settings(**values)  # type: ignore[arg-type]
    if "claim_lookahead_s" in values:  # unset, the runner takes the default bounded by the lease
        _check_lookahead(settings)
    _check_jwt(settings)
    return settings


def _check_lookahead(settings: Settings) -> None:
    """Refuse a lookahead the lease could not cover: a run claimed ahead holds its lease while it waits."""
    if settings.claim_lookahead_s > settings.lease_s / 10:
        raise ConfigError(
            f"SCHEDULER_CLAIM_LOOKAHEAD_S: must be at most a tenth of SCHEDULER_LEASE_S "
            f"({settings.lease_s / 10:g} s), got {settings.claim_lookahead_s:g}"
        )


_CHOICES: Mapping[str, tuple[str, ...]] = {
    "auth": ("required", "off"),
    "log_format": ("json", "console"),
    "log_level": ("debug", "info", "warning", "error"),
    "database_pooler": ("none", "session", "transaction"),
    "http_record_exchange": ("all", "failures", "off"),
}


# ---------------------------------------------------------------------------------- bearer JWTs

JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""What a bearer token may be signed with: asymmetric only, so what checks a token cannot make one."""
MIN_RSA_BITS = 2048
_EC_CURVES: Mapping[str, str] = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_MAX_PEM_BYTES = 64 * 1024


def _parse_jwt_algorithms(name: str, raw: str) -> tuple[str, ...]:
    by_upper = {algorithm.upper(): algorithm for algorithm in JWT_ALGORITHMS}
    chosen: list[str] = []
    for part in raw.split(","):
        item = part.strip()
        if not item:
            continue
        known = by_upper.get(item.upper())
        if known is None:
            why = (
                "is refused: a shared-secret or unsigned token could be made by anyone holding what checks it"
                if item.upper().startswith("HS") or item.lower() == "none"
                else "is not a JWT signature algorithm we accept"
            )
            raise ConfigError(f"{name}: {item!r} {why}; choose from {', '.join(JWT_ALGORITHMS)}")
        if known not in chosen:
            chosen.append(known)
    if not chosen:
        raise ConfigError(f"{name}: name at least one of {', '.join(JWT_ALGORITHMS)}")
    return tuple(chosen)


def load_jwt_public_key(path: str) -> PublicKeyTypes:
    """The public key in a PEM file (a public key or a certificate); OSError or ValueError otherwise."""
    from cryptography import x509  # noqa: PLC0415 - only services that check tokens need it
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    with open(path, "rb") as file:  # noqa: PTH123 - a path given by the operator, read once
        data = file.read(_MAX_PEM_BYTES + 1)
    if len(data) > _MAX_PEM_BYTES:
        raise ValueError("larger than any public key")
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)


def jwt_algorithms_fitting(key: object) -> frozenset[str]:
    """The algorithms of JWT_ALGORITHMS that verify with ``key`` (none for RSA keys under 2048 bits)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa  # noqa: PLC0415

    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return frozenset()
        return frozenset(a for a in JWT_ALGORITHMS if a.startswith(("RS", "PS")))
    if isinstance(key, ec.EllipticCurvePublicKey):
        return frozenset(a for a, curve in _EC_CURVES.items() if key.curve.name == curve)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_jwks_url(url: str) -> None:
    name = "SCHEDULER_AUTH_JWT_JWKS_URL"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if host is None or parts.scheme not in ("https", "http"):
        raise ConfigError(f"{name}: expected an https:// URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"{name}: plain http is allowed to a loopback address only (anyone on the way could swap "
            f"the keys); use https, got {url!r}"
        )


def _check_jwt_key_file(settings: Settings, path: str) -> None:
    name = "SCHEDULER_AUTH_JWT_PUBLIC_KEY_FILE"
    try:
        key = load_jwt_public_key(path)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path!r} ({exc.strerror or exc})") from None
    except ValueError:
        raise ConfigError(f"{name}: {path!r} holds no PEM public key or certificate") from None
    fitting = jwt_algorithms_fitting(key)
    if not fitting & set(settings.auth_jwt_algorithms):
        takes = ", ".join(sorted(fitting)) or f"none: RSA keys need {MIN_RSA_BITS} bits or more"
        raise ConfigError(
            f"SCHEDULER_AUTH_JWT_ALGORITHMS: none of {', '.join(settings.auth_jwt_algorithms)} "
            f"verifies the key in {path!r} (it takes {takes})"
        )


def _check_jwt(settings: Settings) -> None:
    """Refuse a JWT configuration that could not check a token, naming the variable to fix."""
    if settings.auth_jwt_issuer is None:
        for field_name in ("auth_jwt_audience", "auth_jwt_jwks_url", "auth_jwt_public_key_file"):
            if getattr(settings, field_name) is not None:
                raise ConfigError(
                    f"SCHEDULER_AUTH_JWT_ISSUER: required when {_PREFIX}{field_name.upper()} is set "
                    "(tokens are accepted from one issuer)"
                )
        return
    if settings.auth_jwt_audience is None:
        raise ConfigError(
            "SCHEDULER_AUTH_JWT_AUDIENCE: required with SCHEDULER_AUTH_JWT_ISSUER, so that a token "
            "the issuer made for another service is not accepted here"
        )
    url, path = settings.auth_jwt_jwks_url, settings.auth_jwt_public_key_file
    if url is None and path is None:
        raise ConfigError(
            "SCHEDULER_AUTH_JWT_JWKS_URL: set it or SCHEDULER_AUTH_JWT_PUBLIC_KEY_FILE with "
            "SCHEDULER_AUTH_JWT_ISSUER: tokens need the issuer's keys to be checked"
        )
    if url is not None and path is not None:
        raise ConfigError(
            "SCHEDULER_AUTH_JWT_PUBLIC_KEY_FILE: set either it or SCHEDULER_AUTH_JWT_JWKS_URL, not both"
        )
    if url is not None:
        _check_jwks_url(url)
    if path is not None:
        _check_jwt_key_file(settings, path)
    claim = settings.auth_jwt_namespace_claim
    if claim.strip() != claim:
        raise ConfigError(
            f"SCHEDULER_AUTH_JWT_NAMESPACE_CLAIM: a claim name has no spaces around it, got {claim!r}"
        )
