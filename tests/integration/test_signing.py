"""Signatures as the runner's own HTTP client makes them, verified with an independent library.

Keys are prepared once per secret, and every signature equals one keyed from scratch; a real HTTP
receiver on 127.0.0.1 verifies what the client sends. Secrets rotated with `scheduler secrets` and
calls from a runner process: tests/acceptance/test_signing.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from uuid import uuid4

from standardwebhooks import Webhook, WebhookVerificationError

from scheduler.domain.models import HttpAction, RunStatus
from scheduler.domain.webhooks import message_id, new_secret, sign
from scheduler.runner.actions import Attempt, run_http_action
from scheduler.runner.service import http_client
from tests.conftest import Received, settings_for


def verifies(secret: str, call: Received) -> bool:
    try:
        Webhook(secret).verify(call.body, call.headers)
    except WebhookVerificationError:
        return False
    return True


class TestSignatureKeys:
    """Keys are prepared once per secret; every signature still equals one keyed from scratch."""

    def test_a_signature_equals_an_hmac_keyed_from_scratch_on_every_call(self):
        secrets = [new_secret(), new_secret()]
        for body in (b"", b"{}", b"x" * 10_000, b"{}"):
            header = sign(secrets, "msg_1", 1_700_000_000, body)
            expected = " ".join(
                "v1,"
                + base64.b64encode(
                    hmac.new(
                        base64.b64decode(secret.removeprefix("whsec_")),
                        b"msg_1.1700000000." + body,
                        hashlib.sha256,
                    ).digest()
                ).decode()
                for secret in secrets
            )
            assert header == expected

    async def test_a_call_from_the_runners_client_verifies_with_each_secret_it_was_signed_with(
        self, receiver
    ):
        old, new = new_secret(), new_secret()
        attempt = Attempt(
            run_id=uuid4(),
            job_id=uuid4(),
            namespace="default",
            job_name="signed",
            scheduled_for=datetime.now(UTC).replace(microsecond=0),
            attempt=2,
            timeout_s=10,
        )
        action = HttpAction(url=f"{receiver.url}/signed", body={"job": "signed"})
        settings = settings_for("postgresql://unused/unused", http_allow_nets="127.0.0.1/32")
        async with http_client(settings) as client:
            first = await run_http_action(client, action, attempt, [new, old])
            second = await run_http_action(client, action, attempt, [new])
        assert (first.status, second.status) == (RunStatus.SUCCEEDED, RunStatus.SUCCEEDED)
        rotating, rotated = receiver.snapshot()
        assert rotating.headers["webhook-id"] == message_id(attempt.job_id, attempt.scheduled_for)
        assert rotated.headers["webhook-id"] == rotating.headers["webhook-id"]
        assert rotating.headers["content-type"] == "application/json"
        assert verifies(old, rotating)
        assert verifies(new, rotating)
        assert verifies(new, rotated)
        assert not verifies(old, rotated)
