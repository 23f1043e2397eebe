"""The overlap policy as one pure decision: what each new fire does while the job has unfinished runs.

Both ways a job fires use it: the runner's claim (its slots, a catch-up and the slots inside the
grace at once) and a manual trigger from the API or the console (one fire).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from scheduler.domain.models import OverlapPolicy, RunStatus

SKIP_REASON = "skipped: the previous run was still running (overlap policy {policy})"
REPLACE_REASON = "replaced by a newer run (overlap policy replace)"


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


def decide(
    policy: OverlapPolicy,
    *,
    active_runs: int,
    has_queued: bool,
    fires: int = 1,
    finishes_at_once: bool = False,
) -> list[Decision]:
    """Decide each of ``fires`` fires a job makes at one moment, oldest first.

    The oldest fire meets the job's ``active_runs`` pending or running runs: with none, or under
    `allow`, it starts; `skip` skips it; `queue` queues it, unless a run already waits
    (``has_queued``) and it is skipped; `replace` replaces the unfinished runs. Each later fire
    comes while the ones before it still run, unless the action ``finishes_at_once`` inside the
    claim (a log action), when every fire meets what the first met. So a job caught up with several
    slots at once never runs more calls side by side than its policy allows: `skip` starts the
    oldest, `queue` starts one and queues the next, `replace` keeps the newest.
    """
    if active_runs == 0 or policy is OverlapPolicy.ALLOW:
        first = Decision.START
    elif policy is OverlapPolicy.SKIP:
        first = Decision.SKIP
    elif policy is OverlapPolicy.QUEUE:
        first = Decision.SKIP if has_queued else Decision.QUEUE
    else:
        first = Decision.REPLACE
    if fires <= 1 or finishes_at_once or policy is OverlapPolicy.ALLOW:
        return [first] * fires
    later = fires - 1
    if policy is OverlapPolicy.SKIP:
        return [first, *[Decision.SKIP] * later]
    if policy is OverlapPolicy.QUEUE:
        if first is Decision.START:
            return [Decision.START, Decision.QUEUE, *[Decision.SKIP] * (later - 1)]
        return [first, *[Decision.SKIP] * later]
    return [*[Decision.SKIP] * later, first]


class Recorded(NamedTuple):
    """The run row a decided fire becomes."""

    status: RunStatus
    waits: bool
    """Pending until the job's running run ends (overlap `queue`), not at a time of its own."""
    error: str | None


def recorded_as(decision: Decision, policy: OverlapPolicy, *, started: RunStatus) -> Recorded:
    """The row a fire becomes: skipped with the reason, queued, or ``started`` for one that runs.

    ``started`` is what running means to the caller: running for a claim's HTTP call, succeeded for
    an action done inside the claim, pending for a manual run the runners will start.
    """
    # Rows made once and shared (they are tuples): a claim asks once per fire.
    if decision is _SKIP:
        return _SKIPPED[policy]
    if decision is _QUEUE:
        return _QUEUED
    return _STARTED[started]


# Enum members read once: on Python 3.11 each `Decision.X` lookup costs a descriptor call.
_SKIP = Decision.SKIP
_QUEUE = Decision.QUEUE
_SKIPPED = {
    policy: Recorded(RunStatus.SKIPPED, waits=False, error=SKIP_REASON.format(policy=policy))
    for policy in OverlapPolicy
}
_QUEUED = Recorded(RunStatus.PENDING, waits=True, error=None)
_STARTED = {status: Recorded(status, waits=False, error=None) for status in RunStatus}
