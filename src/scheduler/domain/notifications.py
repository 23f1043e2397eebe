"""Failure and recovery notifications: their events and states, the body a receiver gets, the backoff.

A job with `notify` hears `job.failing` once its slots have failed `after` times in a row (each
slot's final attempt), and `job.recovered` when it next succeeds. The events are written beside
the outcome that causes them (an outbox) and delivered by the runners' notifier; the body follows
the Standard Webhooks layout (`type`, `timestamp`, `data`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

import msgspec

from scheduler.domain.models import RetryPolicy, RunStatus


class NotificationEvent(StrEnum):
    """SQL enum notification_event: what happened to the job."""

    FAILING = "job.failing"
    RECOVERED = "job.recovered"


class NotificationStatus(StrEnum):
    """SQL enum notification_status: where an event's delivery stands."""

    PENDING = "pending"
    """Waiting for its first or next attempt."""
    DELIVERED = "delivered"
    """A receiver answered 2xx."""
    EXPIRED = "expired"
    """Given up: not delivered within the age limit, or to a URL no attempt can reach."""


NOTIFICATION_EVENT = {member.value: member for member in NotificationEvent}
NOTIFICATION_STATUS = {member.value: member for member in NotificationStatus}

# Attempts back off exponentially with full jitter, from 1 s up to 10 minutes apart, until one is
# delivered or the event is older than the age limit (`NotifierConfig.max_age_s`).
DELIVERY_BACKOFF = RetryPolicy(max_attempts=20, min_backoff_s=1.0, max_backoff_s=600.0)
# Failed attempts a body lists, newest first.
FAILED_RUNS_SHOWN = 5


class Notification(msgspec.Struct, kw_only=True):
    """An event as stored and listed: what caused it and how its delivery went."""

    id: UUID
    job_id: UUID
    seq: int
    """Its place in the job's events (delivered in this order)."""
    event: NotificationEvent
    run_id: UUID
    """The run whose end caused the event: the slot's final failed attempt, or the success."""
    run_scheduled_for: datetime
    failed_slots: int
    """Failed slots in a row: reached (job.failing), or ended by the success (job.recovered)."""
    paused: bool
    """Whether the job was paused by notify.pause_after in the same step."""
    url: str
    status: NotificationStatus
    attempts: int
    last_attempt_at: datetime | None
    last_http_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class FailedRun(msgspec.Struct, kw_only=True):
    """A failed attempt as an event's body lists it."""

    id: UUID
    scheduled_for: datetime
    attempt: int
    status: RunStatus
    http_status: int | None
    error: str | None
    finished_at: datetime | None


class JobRef(msgspec.Struct, kw_only=True):
    """The job an event is about."""

    id: UUID
    name: str
    namespace: str
    labels: dict[str, str]


class EventData(msgspec.Struct, kw_only=True):
    """What happened, to which job, and the runs behind it."""

    job: JobRef
    run_id: UUID
    """The run whose end caused the event."""
    scheduled_for: datetime
    """That run's slot."""
    failed_slots: int
    """Slots in a row that failed on their final attempt: reached, or (recovered) just ended."""
    paused: bool
    """Whether the job was paused (notify.pause_after) by the same failure."""
    failed_runs: list[FailedRun]
    """The newest failed attempts up to the event's run, newest first (at most 5)."""


class EventBody(msgspec.Struct, kw_only=True):
    """The JSON body POSTed to notify.url, in the Standard Webhooks layout."""

    type: NotificationEvent
    timestamp: datetime
    """When the event happened (the outcome causing it was written)."""
    data: EventData


def message_id(notification_id: UUID) -> str:
    """The `webhook-id` of an event: the same on every attempt, so receivers can deduplicate."""
    return f"msg_ntf_{notification_id.hex}"
