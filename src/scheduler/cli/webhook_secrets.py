"""`scheduler secrets show|rotate`: the webhook signing secrets a namespace's receivers verify calls with."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from scheduler.db import connections, store
from scheduler.domain.names import NAMESPACE_RULE, is_namespace
from scheduler.domain.webhooks import SECRET_CACHE_TTL_S, new_secret
from scheduler.ids import uuid7

DEFAULT_GRACE_S = 24 * 3600


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def secrets_command(args: argparse.Namespace, url: str) -> int:
    """Run one secrets subcommand against the database at ``url``; print what it did."""
    if not is_namespace(args.namespace):
        print(f"scheduler secrets: --namespace {NAMESPACE_RULE}", file=sys.stderr)  # noqa: T201
        return 2
    grace_s = getattr(args, "grace_s", None)
    grace_s = DEFAULT_GRACE_S if grace_s is None else grace_s
    if args.secrets_command == "rotate" and grace_s < 0:
        print("scheduler secrets: --grace-s must be 0 or more", file=sys.stderr)  # noqa: T201
        return 2
    conn = await connections.connect(url, application_name="scheduler-secrets")
    async with conn:
        if args.secrets_command == "rotate":
            async with conn.transaction():
                await store.signing_secret_create(
                    conn, namespace=args.namespace, secret=new_secret(), grace_s=grace_s, secret_id=uuid7()
                )
            print(  # noqa: T201
                f"rotated the signing secret of namespace {args.namespace}: the previous one stays valid, "
                f"and runners keep signing with it too, for {grace_s} s; connected runners sign with the "
                f"new one at once, a runner that missed the notification within {SECRET_CACHE_TTL_S:g} s",
                file=sys.stderr,
            )
            if grace_s < SECRET_CACHE_TTL_S:
                print(  # noqa: T201
                    f"warning: with a grace under {SECRET_CACHE_TTL_S:g} s, a runner that missed the "
                    "rotation may sign some calls with the retired secret only",
                    file=sys.stderr,
                )
        elif not await store.signing_secrets_valid(conn, namespace=args.namespace):
            # Receivers are configured before the first call, so the secret the runners would make
            # lazily at that call is made now.
            async with conn.transaction():
                await store.signing_secret_create(
                    conn, namespace=args.namespace, secret=new_secret(), grace_s=None, secret_id=uuid7()
                )
            print(f"namespace {args.namespace} had no signing secret; made one", file=sys.stderr)  # noqa: T201
        valid = await store.signing_secrets_valid(conn, namespace=args.namespace)
    for item in valid:
        state = "current" if item.expires_at is None else f"valid until {_when(item.expires_at)}"
        print(f"{item.secret}\t{state}")  # noqa: T201
    return 0
