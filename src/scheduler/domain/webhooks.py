"""Standard Webhooks signing: `webhook-id`, `webhook-timestamp` and `webhook-signature` headers.

The signature is `v1,` + base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")), one per valid secret
separated by spaces, so receivers keep verifying while a namespace rotates its secret.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from datetime import datetime
from uuid import UUID

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
# How long a runner keeps signing with the secrets it read. A rotation notifies the runners, which
# drop their copy at once; this bounds how stale a runner that missed the notification (it was
# disconnected at the time) can be, which `scheduler secrets rotate` tells whoever rotates.
SECRET_CACHE_TTL_S = 30.0


def new_secret() -> str:
    """A fresh namespace secret: 32 random bytes, base64, with the `whsec_` prefix."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def message_id(job_id: UUID, scheduled_for: datetime) -> str:
    """The delivery id of a slot: the same for every attempt of it, so receivers can deduplicate."""
    micros = int(scheduled_for.timestamp() * 1_000_000)
    return f"msg_{job_id.hex}_{micros:x}"


@functools.lru_cache(maxsize=4096)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 already keyed with ``secret``: each signature copies it instead of keying again.

    Bounded, and only ever holding secrets the process was handed anyway; a rotated-out secret
    simply stops being asked for and ages out.
    """
    return hmac.new(base64.b64decode(secret.removeprefix(SECRET_PREFIX)), digestmod=hashlib.sha256)


def sign(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for a call signed with every given secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    parts = []
    for secret in secrets_:
        mac = _keyed(secret).copy()
        mac.update(signed)
        parts.append("v1," + binascii.b2a_base64(mac.digest(), newline=False).decode())
    return parts[0] if len(parts) == 1 else " ".join(parts)
