"""`scheduler keys create|list|revoke`: API keys per namespace, stored as hashes."""

from __future__ import annotations

import argparse
import sys

from scheduler.db import connections, store
from scheduler.domain.keys import key_hash, new_key, shown_prefix
from scheduler.domain.names import NAMESPACE_RULE, is_namespace
from scheduler.ids import uuid7


async def keys_command(args: argparse.Namespace, url: str) -> int:
    """Run one keys subcommand; print what it did."""
    conn = await connections.connect(url, application_name="scheduler-keys")
    async with conn:
        if args.keys_command == "create":
            if not is_namespace(args.namespace):
                print(f"scheduler keys: --namespace {NAMESPACE_RULE}", file=sys.stderr)  # noqa: T201
                return 2
            key = new_key()
            async with conn.transaction():
                await store.namespace_ensure(conn, name=args.namespace)
                made = await store.api_key_insert(
                    conn,
                    key_id=uuid7(),
                    namespace=args.namespace,
                    prefix=shown_prefix(key),
                    key_hash=key_hash(key),
                    description=args.description,
                )
            print(f"created key {made.id} ({made.prefix}…) for namespace {made.namespace}", file=sys.stderr)  # noqa: T201
            print("store it now; it is not shown again:", file=sys.stderr)  # noqa: T201
            print(key)  # noqa: T201
            return 0
        if args.keys_command == "list":
            keys = await store.api_key_list(conn, namespace=args.namespace)
            print(f"{'ID':36}  {'PREFIX':12}  {'NAMESPACE':20}  {'CREATED':20}  STATE")  # noqa: T201
            for item in keys:
                state = "revoked" if item.revoked_at else "active"
                created = item.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                print(f"{item.id!s:36}  {item.prefix:12}  {item.namespace:20}  {created:20}  {state}")  # noqa: T201
            return 0
        revoked = await store.api_key_revoke(conn, key=args.key)
        if revoked is None:
            print(f"scheduler keys: no active key with id or prefix {args.key!r}", file=sys.stderr)  # noqa: T201
            return 1
        print(f"revoked key {revoked.id} ({revoked.prefix}…) of namespace {revoked.namespace}")  # noqa: T201
        return 0
