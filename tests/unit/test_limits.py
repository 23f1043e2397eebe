"""The token bucket behind the per-key rate limit, on a clock the test moves.

The limits as the API answers them: tests/integration/test_limits.py.
"""

from __future__ import annotations

import pytest

from scheduler.api.limits import RateLimiter, retry_after


class Clock:
    """A hand-moved monotonic clock for the token buckets."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestTokenBucket:
    """Each key may burst up to its bucket size, then gets tokens back at the configured rate."""

    def test_a_rested_key_may_burst_then_waits_for_the_next_token(self):
        clock = Clock()
        limiter = RateLimiter(rate_per_s=2, burst=3, clock=clock)
        assert [limiter.take(b"k") for _ in range(3)] == [0.0, 0.0, 0.0]
        assert limiter.take(b"k") == pytest.approx(0.5)
        clock.now += 0.5
        assert limiter.take(b"k") == 0.0
        assert limiter.take(b"k") > 0

    def test_tokens_refill_up_to_the_burst_and_no_further(self):
        clock = Clock()
        limiter = RateLimiter(rate_per_s=10, burst=5, clock=clock)
        for _ in range(5):
            limiter.take(b"k")
        clock.now += 3600
        assert [limiter.take(b"k") for _ in range(5)] == [0.0] * 5
        assert limiter.take(b"k") > 0

    def test_keys_do_not_share_buckets(self):
        limiter = RateLimiter(rate_per_s=1, burst=1, clock=Clock())
        assert limiter.take(b"a") == 0.0
        assert limiter.take(b"a") > 0
        assert limiter.take(b"b") == 0.0

    def test_a_refused_request_spends_nothing(self):
        clock = Clock()
        limiter = RateLimiter(rate_per_s=1, burst=1, clock=clock)
        limiter.take(b"k")
        for _ in range(100):
            limiter.take(b"k")
        clock.now += 1
        assert limiter.take(b"k") == 0.0

    def test_retry_after_is_whole_seconds_and_at_least_one(self):
        assert [retry_after(w) for w in (0.01, 0.5, 1.0, 1.2, 7.9)] == ["1", "1", "1", "2", "8"]

    def test_bad_limits_are_refused(self):
        with pytest.raises(ValueError, match="rate_per_s"):
            RateLimiter(rate_per_s=0, burst=1)
        with pytest.raises(ValueError, match="burst"):
            RateLimiter(rate_per_s=1, burst=0)
