"""The notifier: deliver the outbox of job.failing and job.recovered events, away from the claim path.

Events are written by the statement that ends the run causing them (`run_complete_many`). Each
round claims as many due ones as there are free delivery slots (`FOR UPDATE SKIP LOCKED`, so any
number of runners share the work) and starts their deliveries in the background: the round never
waits for a receiver, and a slow or dead one holds at most ``concurrency`` slots of this service,
never a connection, a fire or the runner's HTTP pool (the notifier has an `OutboundClient` of its
own, under the same address rules). A delivery is POSTed once per attempt, signed with the
namespace's secrets as actions are, bounded by the job's timeout_s; it is retried with backoff until
a receiver answers 2xx or the event passes the age limit. At least once: a runner that dies mid-call
leaves the event to be claimed again once its claim runs out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import msgspec
from structlog.typing import FilteringBoundLogger

from scheduler.config import Network
from scheduler.db import store
from scheduler.db.connections import DB_ERRORS, ConnectionSource
from scheduler.domain.notifications import (
    DELIVERY_BACKOFF,
    FAILED_RUNS_SHOWN,
    EventBody,
    EventData,
    JobRef,
    NotificationStatus,
    message_id,
)
from scheduler.domain.retry import backoff_s
from scheduler.domain.webhooks import sign
from scheduler.runner.actions import USER_AGENT, InvalidTargetError, storable, target_for
from scheduler.runner.outbound import BlockedAddressError, OutboundClient, check_literal
from scheduler.runner.signing import SigningSecrets

# Deliveries in flight per runner: what a slow receiver can hold at most.
CONCURRENCY = 20
# Seconds between two claims: how late an event may start its delivery when slots are free.
INTERVAL_S = 0.5
# A claimed event is due again after its job's timeout_s plus this, should its attempt never report.
LEASE_S = 30.0
# Events not delivered within this long after they happened are given up (status expired).
MAX_AGE_S = 24 * 3600.0
# Bytes of a refusing receiver's answer kept in last_error.
ANSWER_KEPT = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifierConfig:
    """How the notifier claims and delivers events."""

    concurrency: int = CONCURRENCY
    """Most deliveries in flight at once in this runner."""
    interval_s: float = INTERVAL_S
    """Seconds between two claims."""
    lease_s: float = LEASE_S
    """Seconds past its job's timeout_s before an unreported attempt's event may be claimed again."""
    max_age_s: float = MAX_AGE_S
    """Seconds after the event before its delivery is given up."""
    allow_nets: tuple[Network, ...] = ()
    """Networks opened past the outbound address rules (SCHEDULER_HTTP_ALLOW_NETS)."""

    def __post_init__(self) -> None:
        """Refuse values the notifier cannot work with."""
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.interval_s <= 0 or self.lease_s <= 0 or self.max_age_s <= 0:
            raise ValueError("interval_s, lease_s and max_age_s must be positive")


class NotifyCounts(msgspec.Struct, frozen=True):
    """What one round did."""

    claimed: int
    """Events whose delivery this round started."""
    in_flight: int
    """Deliveries running once the round had started its own (this round's among them)."""


class Attempted(msgspec.Struct, frozen=True):
    """How one delivery attempt ended."""

    delivered: bool
    give_up: bool
    http_status: int | None
    error: str | None


class Notifier:
    """Claims due events and delivers them in the background, ``concurrency`` at a time."""

    name = "notify"

    def __init__(
        self,
        config: NotifierConfig,
        pool: ConnectionSource,
        signing: SigningSecrets,
        *,
        log: FilteringBoundLogger,
    ) -> None:
        """Claim through ``pool``; sign with ``signing``; the HTTP client opens at the first round."""
        self.config = config
        self._pool = pool
        self._signing = signing
        self._log = log
        self._client: OutboundClient | None = None
        self._tasks: set[asyncio.Task[NotificationStatus | None]] = set()
        self.results: list[NotificationStatus | None] = []
        """Each finished delivery's resulting status, in finishing order (read by tests, then cleared)."""

    @property
    def interval_s(self) -> float:
        """Seconds between two rounds."""
        return self.config.interval_s

    @property
    def in_flight(self) -> int:
        """Deliveries running now."""
        return len(self._tasks)

    async def _open_client(self) -> OutboundClient:
        if self._client is None:
            client = OutboundClient(
                allow_nets=self.config.allow_nets, max_connections=self.config.concurrency
            )
            self._client = await client.__aenter__()
        return self._client

    async def run_once(self, now: datetime | None = None) -> NotifyCounts:
        """Claim as many due events (at ``now``, the database's clock unless passed) as slots are free.

        Their deliveries run in the background; `settle` waits for them.
        """
        free = self.config.concurrency - len(self._tasks)
        if free <= 0:
            return NotifyCounts(claimed=0, in_flight=len(self._tasks))
        async with self._pool.connection() as conn:
            claimed = await store.notification_claim_due(
                conn, limit=free, lease_s=self.config.lease_s, now=now
            )
        if claimed:
            client = await self._open_client()
            for item in claimed:
                task = asyncio.create_task(self._deliver(client, item, now), name=f"notify-{item.id}")
                self._tasks.add(task)
                task.add_done_callback(self._finished)
        return NotifyCounts(claimed=len(claimed), in_flight=len(self._tasks))

    def _finished(self, task: asyncio.Task[NotificationStatus | None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        if task.exception() is None:
            self.results.append(task.result())

    async def settle(self) -> None:
        """Wait until every delivery started so far has ended (tests, a draining shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the deliveries in flight (their events are claimed again later) and close the client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------------------- one event

    async def _body(self, item: store.ClaimedNotification) -> str:
        """The event's body: sent again as it was on a later attempt, else made from the job's runs."""
        if item.payload is not None:
            return item.payload
        async with self._pool.connection() as conn:
            failed = await store.notification_failed_runs(
                conn, job_id=item.job_id, until=item.run_scheduled_for, limit=FAILED_RUNS_SHOWN
            )
        body = EventBody(
            type=item.event,
            timestamp=item.created_at,
            data=EventData(
                job=JobRef(id=item.job_id, name=item.job_name, namespace=item.namespace, labels=item.labels),
                run_id=item.run_id,
                scheduled_for=item.run_scheduled_for,
                failed_slots=item.failed_slots,
                paused=item.paused,
                failed_runs=failed,
            ),
        )
        return msgspec.json.encode(body).decode()

    async def _deliver(
        self, client: OutboundClient, item: store.ClaimedNotification, now: datetime | None
    ) -> NotificationStatus | None:
        try:
            payload = await self._body(item)
            secrets = await self._signing.for_namespace(item.namespace)
        except DB_ERRORS:
            # The claim stands; the event is tried again once it runs out.
            self._log.warning(
                "notification_not_prepared", notification_id=str(item.id), job_id=str(item.job_id)
            )
            return None
        attempted = await self._post(client, item, payload.encode(), secrets)
        retry_in_s = 0.0 if attempted.delivered else backoff_s(DELIVERY_BACKOFF, min(item.attempts, 30))
        try:
            async with self._pool.connection() as conn:
                status = await store.notification_attempted(
                    conn,
                    notification_id=item.id,
                    attempt=item.attempts,
                    delivered=attempted.delivered,
                    give_up=attempted.give_up,
                    retry_in_s=retry_in_s,
                    max_age_s=self.config.max_age_s,
                    http_status=attempted.http_status,
                    error=attempted.error,
                    payload=payload,
                    now=now,
                )
        except DB_ERRORS:
            self._log.warning(
                "notification_outcome_lost", notification_id=str(item.id), job_id=str(item.job_id)
            )
            return None
        self._logged(item, attempted, status, retry_in_s)
        return status

    async def _post(
        self, client: OutboundClient, item: store.ClaimedNotification, body: bytes, secrets: list[str]
    ) -> Attempted:
        """One signed POST of the body within the job's timeout; no redirect is followed."""
        try:
            target = target_for(item.url)
        except InvalidTargetError as exc:
            return Attempted(delivered=False, give_up=True, http_status=None, error=storable(str(exc)))
        msg_id = message_id(item.id)
        timestamp = int(time.time())
        headers = {
            "user-agent": USER_AGENT,
            "content-type": "application/json",
            "accept-encoding": "identity",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secrets, msg_id, timestamp, body),
        }
        try:
            if target.literal is not None:
                check_literal(target.url.raw_host or str(target.literal), client.allow_nets)
            async with (
                asyncio.timeout(item.timeout_s),
                client.session.post(
                    target.url, data=body, headers=headers, allow_redirects=False
                ) as response,
            ):
                status = response.status
                answer = await response.content.read(ANSWER_KEPT)
        except TimeoutError:
            return Attempted(
                delivered=False,
                give_up=False,
                http_status=None,
                error=f"no response within timeout_s={item.timeout_s}",
            )
        except BlockedAddressError as exc:
            return Attempted(delivered=False, give_up=True, http_status=None, error=storable(str(exc)))
        except (aiohttp.ClientError, ValueError) as exc:
            return Attempted(
                delivered=False,
                give_up=False,
                http_status=None,
                error=storable(f"{type(exc).__name__}: {exc}"),
            )
        if 200 <= status < 300:  # noqa: PLR2004
            return Attempted(delivered=True, give_up=False, http_status=status, error=None)
        said = answer.decode("utf-8", "replace").strip()
        error = f"HTTP {status}" + (f": {said}" if said else "")
        return Attempted(delivered=False, give_up=False, http_status=status, error=storable(error))

    def _logged(
        self,
        item: store.ClaimedNotification,
        attempted: Attempted,
        status: NotificationStatus | None,
        retry_in_s: float,
    ) -> None:
        fields = {
            "notification_id": str(item.id),
            "job_id": str(item.job_id),
            "job_name": item.job_name,
            "namespace": item.namespace,
            "run_id": str(item.run_id),
            "event": item.event.value,
            "attempt": item.attempts,
        }
        if status is NotificationStatus.DELIVERED:
            self._log.info("notification_delivered", http_status=attempted.http_status, **fields)
        elif status is NotificationStatus.EXPIRED:
            self._log.warning("notification_expired", error=attempted.error, **fields)
        elif status is NotificationStatus.PENDING:
            self._log.info(
                "notification_retrying", error=attempted.error, retry_in_s=round(retry_in_s, 1), **fields
            )
