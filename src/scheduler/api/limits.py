"""Per-key request rate limits: a token bucket for each API key, kept in this API worker's memory.

Buckets are not shared between worker processes or replicas: with N workers behind a balancer a key
may make up to N times the configured rate in total. That keeps a hot path free of database writes;
the limit exists to stop one runaway client from starving the others, not to bill anybody.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

# Past this many remembered keys, buckets that have refilled completely are forgotten (a full bucket
# is what a key we never saw gets anyway).
_MAX_BUCKETS = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets: a key holds up to ``burst`` tokens, refilled at ``rate_per_s``; a request spends one."""

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        """Limit every key to ``rate_per_s`` requests per second with bursts of up to ``burst``."""
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[bytes, _Bucket] = {}

    def take(self, key: bytes) -> float:
        """Spend one of ``key``'s tokens; return 0 when it had one, else the seconds until it will."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(tokens=self.burst, updated=now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate_per_s)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate_per_s

    def wait_s(self, key: bytes) -> float:
        """The seconds until ``key`` will have a token, without spending one; 0 when it has one now."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.burst, bucket.tokens + (self._clock() - bucket.updated) * self.rate_per_s)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate_per_s

    def _forget_full(self, now: float) -> None:
        refill_s = self.burst / self.rate_per_s
        for key in [k for k, b in self._buckets.items() if now - b.updated >= refill_s]:
            del self._buckets[key]


def retry_after(wait_s: float) -> str:
    """The Retry-After header value for a wait: whole seconds, at least one."""
    return str(max(1, math.ceil(wait_s)))
