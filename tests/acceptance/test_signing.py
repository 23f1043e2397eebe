"""Signed calls: receivers verify them with an independent Standard Webhooks library, across rotations.

Secrets are read and rotated with the real `scheduler secrets` command; calls come from a runner
process to a real HTTP receiver. The signatures themselves: tests/integration/test_signing.py.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.domain.webhooks import new_secret
from tests.conftest import Received, create_api_key, eventually, settings_for
from tests.integration.test_signing import verifies


def secrets_command(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", "secrets", *args],
        env=os.environ | {"SCHEDULER_DATABASE_URL": db_url, "SCHEDULER_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def shown_secrets(db_url: str, namespace: str = "default") -> list[tuple[str, str]]:
    """`scheduler secrets show`: (secret, state) pairs, the current one first."""
    done = secrets_command(db_url, "show", "--namespace", namespace)
    assert done.returncode == 0, done.stderr
    return [tuple(line.split("\t", 1)) for line in done.stdout.splitlines()]  # type: ignore[misc]


def rotate(db_url: str, *extra: str, namespace: str = "default") -> None:
    done = secrets_command(db_url, "rotate", "--namespace", namespace, *extra)
    assert done.returncode == 0, done.stderr


def time_left(state: str) -> timedelta:
    """How long a secret shown as `valid until <instant>` stays valid."""
    return datetime.fromisoformat(state.removeprefix("valid until ")) - datetime.now(UTC)


def hook_job(receiver, name: str = "signed", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "@every 1h",
        "start_at": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        "action": {"type": "http", "url": f"{receiver.url}/{name}", "body": {"job": name}},
    } | extra


class TestSecretsCommand:
    """`scheduler secrets show|rotate` prints what receivers need and rotates with a grace period."""

    def test_show_makes_the_secret_once_and_prints_it_again(self, db_url):
        first = shown_secrets(db_url)
        assert len(first) == 1
        secret, state = first[0]
        assert state == "current"
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        assert shown_secrets(db_url) == first

    def test_rotate_makes_a_new_current_secret_and_keeps_the_old_one_for_the_grace(self, db_url):
        (old, _), *_ = shown_secrets(db_url)
        rotate(db_url, "--grace-s", "3600")
        (new, new_state), (kept, kept_state) = shown_secrets(db_url)
        assert (new_state, kept) == ("current", old)
        assert new != old
        assert timedelta(minutes=55) < time_left(kept_state) <= timedelta(hours=1)

    def test_rotate_defaults_to_a_day_of_grace(self, db_url):
        shown_secrets(db_url)
        rotate(db_url)
        (_, kept_state) = shown_secrets(db_url)[1]
        assert timedelta(hours=23) < time_left(kept_state) <= timedelta(hours=24)

    def test_rotate_without_grace_retires_the_old_secret_at_once(self, db_url):
        (old, _), *_ = shown_secrets(db_url)
        rotate(db_url, "--grace-s", "0")
        shown = shown_secrets(db_url)
        assert len(shown) == 1
        assert shown[0][0] != old

    def test_namespaces_have_their_own_secrets(self, db_url):
        assert shown_secrets(db_url, "billing") != shown_secrets(db_url, "default")

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("show", "--namespace", "no spaces"), "--namespace must be 1-64 of A-Z a-z 0-9 . _ -"),
            (("rotate", "--namespace", "x", "--grace-s", "-1"), "--grace-s must be 0 or more"),
        ],
    )
    def test_bad_arguments_exit_2_naming_the_option(self, db_url, args, message):
        done = secrets_command(db_url, *args)
        assert done.returncode == 2
        assert done.stderr == f"scheduler secrets: {message}\n"


class TestSignedCalls:
    """A runner signs every call so that any Standard Webhooks library verifies it."""

    async def test_a_call_verifies_with_the_namespace_secret_and_no_other(self, client, procs, receiver):
        (secret, _), *_ = shown_secrets(procs.db_url)
        assert (await client.post("/jobs", json=hook_job(receiver))).status_code == 201
        procs.runner()
        await eventually(lambda: receiver.count() >= 1, timeout=20, what="a signed call")
        call = receiver.snapshot()[0]
        assert verifies(secret, call)
        assert not verifies(new_secret(), call)
        tampered = Received(call.method, call.path, call.headers, call.body + b" ", call.at)
        assert not verifies(secret, tampered)

    async def test_during_a_rotation_calls_verify_with_the_old_and_the_new_secret(
        self, client, procs, receiver
    ):
        (old, _), *_ = shown_secrets(procs.db_url)
        rotate(procs.db_url, "--grace-s", "3600")
        (new, _), *_ = shown_secrets(procs.db_url)
        assert (await client.post("/jobs", json=hook_job(receiver))).status_code == 201
        procs.runner()
        await eventually(lambda: receiver.count() >= 1, timeout=20, what="a signed call")
        call = receiver.snapshot()[0]
        assert len(call.headers["webhook-signature"].split(" ")) == 2
        assert verifies(old, call)
        assert verifies(new, call)

    async def test_after_the_grace_only_the_new_secret_verifies(self, client, procs, receiver):
        (old, _), *_ = shown_secrets(procs.db_url)
        rotate(procs.db_url, "--grace-s", "0")
        (new, _), *_ = shown_secrets(procs.db_url)
        assert (await client.post("/jobs", json=hook_job(receiver))).status_code == 201
        procs.runner()
        await eventually(lambda: receiver.count() >= 1, timeout=20, what="a signed call")
        call = receiver.snapshot()[0]
        assert verifies(new, call)
        assert not verifies(old, call)

    async def test_the_webhook_id_is_the_same_for_every_attempt_of_a_slot(self, client, procs, receiver, sql):
        (secret, _), *_ = shown_secrets(procs.db_url)
        receiver.status = 503
        job = hook_job(receiver, retry={"max_attempts": 3, "min_backoff_s": 0, "max_backoff_s": 0})
        response = await client.post("/jobs", json=job)
        assert response.status_code == 201
        procs.runner()
        await eventually(lambda: receiver.count() >= 3, timeout=30, what="three attempts")
        calls = receiver.snapshot()[:3]
        assert len({call.headers["webhook-id"] for call in calls}) == 1
        assert all(verifies(secret, call) for call in calls)
        attempts = sql(
            "SELECT attempt, scheduled_for FROM runs WHERE job_id = %s ORDER BY attempt",
            (response.json()["id"],),
        )
        assert [attempt for attempt, _ in attempts][:3] == [1, 2, 3]
        assert len({slot for _, slot in attempts}) == 1

    async def test_each_namespace_signs_with_its_own_secret(self, db_url, procs, receiver):
        billing_key = await create_api_key(db_url, "billing")
        app = create_app(settings_for(db_url, auth="required"))
        async with AsyncTestClient(app=app) as billing:
            made = await billing.post(
                "/jobs", json=hook_job(receiver, "billed"), headers={"Authorization": f"Bearer {billing_key}"}
            )
            assert made.status_code == 201, made.text
        (billing_secret, _), *_ = shown_secrets(db_url, "billing")
        (default_secret, _), *_ = shown_secrets(db_url, "default")
        procs.runner()
        await eventually(lambda: receiver.count() >= 1, timeout=20, what="the billing call")
        call = receiver.snapshot()[0]
        assert call.path == "/billed"
        assert verifies(billing_secret, call)
        assert not verifies(default_secret, call)
