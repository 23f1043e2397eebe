"""Failure and recovery notifications: counted in the completion statement, delivered by the notifier.

Outcomes are written through the real completer on a real database; events go to a real HTTP
receiver, whose requests are verified with an independent Standard Webhooks library.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from scheduler.db import store
from scheduler.domain.models import Outcome, OverlapPolicy, RetryPolicy, RunStatus
from scheduler.runner.completer import Completion
from scheduler.runner.service import RunnerParts
from tests.conftest import Receiver, start_run
from tests.integration.test_signing import verifies

# Slots of the last few hours: the events they cause are due now, by the database's clock too.
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=8)
FAIL = Outcome(
    status=RunStatus.FAILED, duration_ms=5, http_status=500, error="HTTP 500 is not in success_codes"
)
OK = Outcome(status=RunStatus.SUCCEEDED, duration_ms=5, http_status=200)


async def make_job(client: Any, receiver: Receiver, **notify: Any) -> dict[str, Any]:
    body = {
        "name": "billing-export",
        "schedule": "@every 1h",
        "action": {"type": "http", "url": f"{receiver.url}/target"},
        "retry": {"max_attempts": 1},
        "labels": {"team": "billing"},
        "notify": {"url": f"{receiver.url}/notify", **notify},
    }
    response = await client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def end_attempt(
    parts: RunnerParts,
    job_id: UUID,
    slot: datetime,
    outcome: Outcome,
    *,
    attempt: int = 1,
    max_attempts: int = 1,
) -> None:
    """Record attempt ``attempt`` of ``slot`` running, then end it with ``outcome`` through the completer."""
    if attempt == 1:
        lease = await start_run(parts, job_id, slot=slot, lease_s=30, at=slot)
        run_id, token = lease.run_id, lease.lease_token
    else:  # the retry the completer recorded: start it as a claim of pending runs would
        async with parts.runner.pool.connection() as conn:
            claimed = await store.run_claim_pending(
                conn, limit=10, runner="test", lease_s=30, now=slot + timedelta(hours=1)
            )
        (run,) = [run for run in claimed if run.job_id == job_id]
        run_id, token = run.run_id, run.lease_token
    fenced = store.FencedOutcome(
        run_id=run_id, job_id=job_id, scheduled_for=slot, lease_token=token, outcome=outcome
    )
    counts = await parts.completer.complete(
        [
            Completion(
                fenced=fenced,
                attempt=attempt,
                retry=RetryPolicy(max_attempts=max_attempts, min_backoff_s=0, max_backoff_s=0),
                overlap=OverlapPolicy.SKIP,
            )
        ],
        now=slot + timedelta(seconds=1),
    )
    assert counts.written == 1


def events(sql: Any, job_id: str) -> list[tuple[Any, ...]]:
    return sql(
        "SELECT event::text, failed_slots, status::text, paused FROM notifications"
        " WHERE job_id = %s ORDER BY seq",
        (job_id,),
    )


def job_row(sql: Any, job_id: str) -> tuple[Any, ...]:
    (row,) = sql(
        "SELECT failed_slots, consecutive_failures, paused, pause_note, next_run_at FROM jobs WHERE id = %s",
        (job_id,),
    )
    return row


async def deliver(parts: RunnerParts, now: datetime | None = None) -> int:
    """One notifier round at ``now``, waited out; how many events it claimed."""
    counts = await parts.notifier.run_once(now=now)
    await parts.notifier.settle()
    return counts.claimed


def secret_of(sql: Any) -> str:
    ((secret,),) = sql(
        "SELECT secret FROM signing_secrets WHERE namespace = 'default' AND expires_at IS NULL"
    )
    return str(secret)


@pytest.fixture
async def parts(runner_parts: RunnerParts) -> Any:
    yield runner_parts
    await runner_parts.notifier.aclose()


class TestCountingFailedSlots:
    """failed_slots counts slots whose final attempt failed; events are written beside the outcome."""

    async def test_retries_of_one_slot_count_as_one_failed_slot(self, client, parts, receiver, sql):
        job = await make_job(client, receiver, after=2)
        job_id = UUID(job["id"])
        for attempt in (1, 2, 3):
            await end_attempt(parts, job_id, BASE, FAIL, attempt=attempt, max_attempts=3)
        assert job_row(sql, job["id"])[:2] == (1, 3)
        assert events(sql, job["id"]) == []

    async def test_reaching_after_writes_one_failing_event_and_a_success_one_recovery(
        self, client, parts, receiver, sql
    ):
        job = await make_job(client, receiver, after=3)
        job_id = UUID(job["id"])
        for hour in range(2):
            await end_attempt(parts, job_id, BASE + timedelta(hours=hour), FAIL)
        assert events(sql, job["id"]) == []
        await end_attempt(parts, job_id, BASE + timedelta(hours=2), FAIL)
        assert events(sql, job["id"]) == [("job.failing", 3, "pending", False)]
        await end_attempt(parts, job_id, BASE + timedelta(hours=3), FAIL)  # still the same streak
        assert len(events(sql, job["id"])) == 1
        await end_attempt(parts, job_id, BASE + timedelta(hours=4), OK)
        assert events(sql, job["id"])[1] == ("job.recovered", 4, "pending", False)
        assert job_row(sql, job["id"])[0] == 0
        await end_attempt(parts, job_id, BASE + timedelta(hours=5), OK)  # no second recovery
        assert len(events(sql, job["id"])) == 2

    async def test_a_success_before_the_threshold_sends_nothing(self, client, parts, receiver, sql):
        job = await make_job(client, receiver, after=2)
        job_id = UUID(job["id"])
        await end_attempt(parts, job_id, BASE, FAIL)
        await end_attempt(parts, job_id, BASE + timedelta(hours=1), OK)
        await end_attempt(parts, job_id, BASE + timedelta(hours=2), FAIL)
        assert events(sql, job["id"]) == []
        assert job_row(sql, job["id"])[0] == 1

    async def test_no_recovery_event_when_not_asked_for(self, client, parts, receiver, sql):
        job = await make_job(client, receiver, after=1, on_recovery=False)
        job_id = UUID(job["id"])
        await end_attempt(parts, job_id, BASE, FAIL)
        await end_attempt(parts, job_id, BASE + timedelta(hours=1), OK)
        assert [row[0] for row in events(sql, job["id"])] == ["job.failing"]

    async def test_pause_after_pauses_the_job_with_a_note_saying_why(self, client, parts, receiver, sql):
        job = await make_job(client, receiver, after=2, pause_after=2)
        job_id = UUID(job["id"])
        await end_attempt(parts, job_id, BASE, FAIL)
        assert job_row(sql, job["id"])[2] is False
        await end_attempt(parts, job_id, BASE + timedelta(hours=1), FAIL)
        failed_slots, _, paused, note, next_run_at = job_row(sql, job["id"])
        assert (failed_slots, paused, next_run_at) == (2, True, None)
        assert "notify.pause_after" in note
        assert "2 slots in a row failed" in note
        assert events(sql, job["id"]) == [("job.failing", 2, "pending", True)]
        shown = (await client.get(f"/jobs/{job['id']}")).json()
        assert shown["paused"] is True
        assert shown["version"] == job["version"] + 1

    async def test_a_lost_run_the_rescuer_ends_counts_too(self, client, parts, receiver, sql):
        job = await make_job(client, receiver, after=1)
        job_id = UUID(job["id"])
        await start_run(parts, job_id, slot=BASE, lease_s=1, at=BASE)
        rescued = await parts.rescuer.run_once(now=BASE + timedelta(seconds=5))
        assert rescued.rescued == 1
        assert events(sql, job["id"]) == [("job.failing", 1, "pending", False)]


class TestDelivery:
    """The notifier POSTs each event signed, retries until delivered, and never waits on a receiver."""

    async def test_the_event_is_posted_once_signed_with_the_namespace_secret(
        self, client, parts, receiver, sql
    ):
        job = await make_job(client, receiver, after=1)
        job_id = UUID(job["id"])
        await end_attempt(parts, job_id, BASE, FAIL)
        assert await deliver(parts) == 1
        assert await deliver(parts) == 0
        (call,) = receiver.snapshot()
        assert call.path == "/notify"
        assert call.headers["content-type"] == "application/json"
        assert verifies(secret_of(sql), call)
        body = json.loads(call.body)
        assert body["type"] == "job.failing"
        assert body["data"]["job"] == {
            "id": job["id"],
            "name": "billing-export",
            "namespace": "default",
            "labels": {"team": "billing"},
        }
        assert body["data"]["failed_slots"] == 1
        (failed,) = body["data"]["failed_runs"]
        assert failed["error"] == FAIL.error
        assert failed["http_status"] == 500
        assert body["data"]["run_id"] == failed["id"]
        assert events(sql, job["id"]) == [("job.failing", 1, "delivered", False)]

    async def test_a_refusing_receiver_is_retried_with_the_same_body_until_it_answers(
        self, client, parts, receiver, sql
    ):
        job = await make_job(client, receiver, after=1)
        await end_attempt(parts, UUID(job["id"]), BASE, FAIL)
        receiver.status, receiver.reply = 503, b"maintenance"
        assert await deliver(parts) == 1
        ((status, attempts, last_status, last_error),) = sql(
            "SELECT status::text, attempts, last_http_status, last_error FROM notifications"
        )
        assert (status, attempts, last_status, last_error) == ("pending", 1, 503, "HTTP 503: maintenance")
        assert await deliver(parts) == 0  # backing off
        receiver.status = 200
        assert await deliver(parts, now=datetime.now(UTC) + timedelta(minutes=20)) == 1
        first, second = receiver.snapshot()
        assert first.body == second.body
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert verifies(secret_of(sql), second)
        assert sql("SELECT status::text, attempts FROM notifications") == [("delivered", 2)]

    async def test_an_event_past_the_age_limit_is_given_up(self, client, parts, receiver, sql):
        job = await make_job(client, receiver, after=1)
        await end_attempt(parts, UUID(job["id"]), BASE, FAIL)
        receiver.status = 500
        # The event happened at BASE + 1 s; a day and more later, the next attempt would be too late.
        assert await deliver(parts, now=BASE + timedelta(days=1, seconds=2)) == 1
        assert sql("SELECT status::text FROM notifications") == [("expired",)]

    async def test_a_recovery_waits_for_the_failure_before_it(self, client, parts, receiver):
        job = await make_job(client, receiver, after=1)
        job_id = UUID(job["id"])
        await end_attempt(parts, job_id, BASE, FAIL)
        await end_attempt(parts, job_id, BASE + timedelta(hours=1), OK)
        receiver.status = 500
        assert await deliver(parts) == 1  # only the failure: the recovery waits behind it
        receiver.status = 200
        later = datetime.now(UTC) + timedelta(minutes=20)
        assert await deliver(parts, now=later) == 1
        assert await deliver(parts, now=later) == 1
        kinds = [json.loads(call.body)["type"] for call in receiver.snapshot()]
        assert kinds == ["job.failing", "job.failing", "job.recovered"]

    async def test_a_slow_receiver_holds_a_delivery_slot_not_the_round(self, client, parts, receiver, sql):
        job = await make_job(client, receiver, after=1)
        await end_attempt(parts, UUID(job["id"]), BASE, FAIL)
        receiver.delay_s = 3.0
        started = time.monotonic()
        counts = await parts.notifier.run_once()
        took = time.monotonic() - started
        assert (counts.claimed, counts.in_flight) == (1, 1)
        assert took < receiver.delay_s, "the round waited for the receiver"
        await parts.notifier.settle()
        assert sql("SELECT status::text FROM notifications") == [("delivered",)]

    async def test_a_blocked_address_is_given_up_at_once(self, client, parts, receiver, sql):
        job = await make_job(client, receiver, after=1)
        await client.patch(f"/jobs/{job['id']}", json={"notify": {"url": "http://10.1.2.3/hook", "after": 1}})
        await end_attempt(parts, UUID(job["id"]), BASE, FAIL)
        assert await deliver(parts) == 1
        ((status, error),) = sql("SELECT status::text, last_error FROM notifications")
        assert status == "expired"
        assert "blocked" in error


class TestTheApi:
    """notify goes through the job's layers; GET /jobs/{id}/notifications lists the events."""

    async def test_notify_is_stored_shown_and_cleared(self, client, receiver):
        job = await make_job(client, receiver)
        assert job["notify"] == {
            "url": f"{receiver.url}/notify",
            "after": 3,
            "on_recovery": True,
            "pause_after": None,
        }
        assert job["failed_slots"] == 0
        cleared = await client.patch(f"/jobs/{job['id']}", json={"notify": None})
        assert cleared.json()["notify"] is None

    @pytest.mark.parametrize(
        ("notify", "field"),
        [
            ({"url": "ftp://example.com/x"}, "notify.url"),
            ({"url": "http://user:pw@example.com/x"}, "notify.url"),
            ({}, "notify"),
            ({"url": "https://example.com/x", "after": 3, "pause_after": 2}, "notify.pause_after"),
            ({"url": "https://example.com/x", "after": 0}, "notify.after"),
            ({"url": "https://example.com/x", "every": 3}, "notify.every"),
        ],
    )
    async def test_bad_notify_is_refused_naming_the_field(self, client, notify, field):
        body = {"name": "x", "schedule": "@daily", "action": {"type": "log"}, "notify": notify}
        response = await client.post("/jobs", json=body)
        assert response.status_code in (400, 422), response.text
        assert field in [error["field"] for error in response.json()["errors"]], response.text

    async def test_the_list_shows_each_event_with_its_run_and_delivery(self, client, parts, receiver, sql):
        job = await make_job(client, receiver, after=1)
        job_id = UUID(job["id"])
        await end_attempt(parts, job_id, BASE, FAIL)
        await end_attempt(parts, job_id, BASE + timedelta(hours=1), OK)
        receiver.status = 500
        await deliver(parts)
        page = (await client.get(f"/jobs/{job['id']}/notifications")).json()
        recovered, failing = page["items"]
        assert (failing["event"], failing["status"], failing["attempts"]) == ("job.failing", "pending", 1)
        assert failing["last_http_status"] == 500
        assert (recovered["event"], recovered["status"], recovered["attempts"]) == (
            "job.recovered",
            "pending",
            0,
        )
        ((failed_run,),) = sql("SELECT id FROM runs WHERE status = 'failed'")
        assert failing["run_id"] == str(failed_run)
        first = (await client.get(f"/jobs/{job['id']}/notifications", params={"limit": 1})).json()
        assert [item["id"] for item in first["items"]] == [recovered["id"]]
        rest = await client.get(
            f"/jobs/{job['id']}/notifications", params={"limit": 1, "cursor": first["next_cursor"]}
        )
        assert [item["id"] for item in rest.json()["items"]] == [failing["id"]]

    async def test_an_unknown_job_is_404_and_a_bad_cursor_400(self, client, receiver):
        job = await make_job(client, receiver)
        assert (await client.get(f"/jobs/{UUID(int=7)}/notifications")).status_code == 404
        bad = await client.get(f"/jobs/{job['id']}/notifications", params={"cursor": "bm90LW91cnM"})
        assert bad.status_code == 400
