"""Settings read from `SCHEDULER_*` environment variables, validated once at start-up."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal, TypeAlias

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
    namespace_job_quota: int = 100_000
    """Most jobs one namespace may hold; creating one more answers 422."""
    http_allow_nets: tuple[Network, ...] = ()
    """Networks outbound calls may reach despite the address rules."""
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_port: int | None = None
    runner_concurrency: int = 1000
    """HTTP actions in flight per runner (SPEC 7): webhooks mostly wait on the network, not the CPU."""
    claim_batch: int = 500
    """Most due jobs claimed in one transaction."""
    poll_interval_s: float = 1.0
    """Longest sleep between claims when nothing is due sooner and no notification arrives."""
    lease_s: float = 30.0
    """How long a claimed run stays owned without a heartbeat."""
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
    "shutdown_grace_s": (0.0, 3600.0),
    "db_max_lifetime_s": (10.0, 86_400.0),
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
        elif field.name in _CHOICES:
            choice = raw.strip().lower()
            if choice not in _CHOICES[field.name]:
                raise ConfigError(f"{name}: must be one of {', '.join(_CHOICES[field.name])}, got {raw!r}")
            values[field.name] = choice
        else:
            values[field.name] = raw
    return Settings(**values)  # type: ignore[arg-type]


_CHOICES: Mapping[str, tuple[str, ...]] = {
    "auth": ("required", "off"),
    "log_format": ("json", "console"),
    "log_level": ("debug", "info", "warning", "error"),
    "database_pooler": ("none", "session", "transaction"),
}
