"""API keys: what one looks like, how one is made, and the hash that is all the database keeps of it.

The API's bearer check, the console's sign-in and `scheduler keys create` all read keys here, so a
key one of them accepts is a key the others accept.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk_"
# Longer than any key we make (3 + 43 characters) with room to spare; anything longer is not a key
# of ours and costs no hashing or lookup.
MAX_KEY_LENGTH = 256
# How much of a key `api_keys.prefix` keeps, so people can tell their keys apart in listings.
SHOWN_PREFIX_LENGTH = 12


def new_key() -> str:
    """Make a key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


def could_be_key(text: str) -> bool:
    """Whether ``text`` has the shape of a key of ours (checked before any lookup)."""
    return text.startswith(KEY_PREFIX) and len(text) <= MAX_KEY_LENGTH


def hash_if_key(text: str) -> bytes | None:
    """The stored form of ``text`` if it could be a key of ours, else None."""
    return key_hash(text) if could_be_key(text) else None


def shown_prefix(key: str) -> str:
    """The start of a key that listings show and `scheduler keys revoke` accepts."""
    return key[:SHOWN_PREFIX_LENGTH]
