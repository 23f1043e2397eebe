"""The retry policy as pure functions: whether an ended attempt gets another one, and when."""

from __future__ import annotations

import random
from collections.abc import Callable

from scheduler.domain.models import RetryPolicy, RunStatus

# The endings the retry policy answers with another attempt of the slot. A cancelled run was
# stopped on purpose and is not retried on its own; a person may still retry it by request.
RETRIED_ENDINGS = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST})
# The endings POST /runs/{id}/retry accepts.
RETRYABLE_BY_REQUEST = RETRIED_ENDINGS | {RunStatus.CANCELLED}


def backoff_s(
    policy: RetryPolicy, failed_attempt: int, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Delay before the attempt after ``failed_attempt``: exponential, full jitter in [min, cap]."""
    cap = min(policy.max_backoff_s, policy.min_backoff_s * 2 ** (failed_attempt - 1))
    return uniform(policy.min_backoff_s, max(cap, policy.min_backoff_s))


def gets_another_attempt(
    policy: RetryPolicy, status: RunStatus, attempt: int, *, mendable: bool = True
) -> bool:
    """Whether the retry policy answers ``attempt`` ending with ``status`` with another attempt.

    ``mendable`` is False for failures no retry can mend (a refused address, an invalid URL), which
    are final at once (SPEC 3.3).
    """
    return mendable and status in RETRIED_ENDINGS and attempt < policy.max_attempts


def next_attempt_in(
    policy: RetryPolicy,
    status: RunStatus,
    attempt: int,
    *,
    mendable: bool = True,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float | None:
    """Seconds until the next attempt of a slot whose ``attempt`` ended with ``status``; None for none."""
    if not gets_another_attempt(policy, status, attempt, mendable=mendable):
        return None
    return backoff_s(policy, attempt, uniform)
