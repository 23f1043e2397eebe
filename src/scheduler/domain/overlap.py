"""The overlap policy as a pure decision: what a new fire does while the job has unfinished runs."""

from __future__ import annotations

from enum import StrEnum

from scheduler.domain.models import OverlapPolicy


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


def in_claim(policy: OverlapPolicy, first: Decision, count: int, *, finishes_at_once: bool) -> list[Decision]:
    """Decide each of ``count`` fires one claim makes for a job, oldest first.

    ``first`` is the decision for the oldest fire against the job's unfinished runs; each later fire
    comes while the ones before it still run, unless the action ``finishes_at_once`` inside the claim
    (a log action), when every fire meets what the first met. So a job that is caught up with several
    slots at once never runs more calls side by side than its policy allows: `skip` starts the oldest,
    `queue` starts one and queues the next, `replace` keeps the newest.
    """
    if count <= 1 or finishes_at_once or policy is OverlapPolicy.ALLOW:
        return [first] * count
    later = count - 1
    if policy is OverlapPolicy.SKIP:
        return [first, *[Decision.SKIP] * later]
    if policy is OverlapPolicy.QUEUE:
        if first is Decision.START:
            return [Decision.START, Decision.QUEUE, *[Decision.SKIP] * (later - 1)]
        return [first, *[Decision.SKIP] * later]
    return [*[Decision.SKIP] * later, first]
