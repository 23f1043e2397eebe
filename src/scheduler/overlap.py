"""The overlap policy as a pure decision: what a new fire does while the job has unfinished runs."""

from __future__ import annotations

from enum import StrEnum

from scheduler.models import OverlapPolicy


class Decision(StrEnum):
    """What to do with a fire."""

    START = "start"
    """Run it now."""
    SKIP = "skip"
    """Record it as skipped."""
    QUEUE = "queue"
    """Record it as pending, to start when the running run ends."""
    REPLACE = "replace"
    """Cancel the unfinished runs, then run it now."""


SKIP_REASON = "skipped: the previous run was still running (overlap policy {policy})"


def decide(policy: OverlapPolicy, *, active_runs: int, has_queued: bool) -> Decision:
    """Decide for a job with ``active_runs`` pending or running runs."""
    if active_runs == 0 or policy is OverlapPolicy.ALLOW:
        return Decision.START
    if policy is OverlapPolicy.SKIP:
        return Decision.SKIP
    if policy is OverlapPolicy.QUEUE:
        return Decision.SKIP if has_queued else Decision.QUEUE
    return Decision.REPLACE
