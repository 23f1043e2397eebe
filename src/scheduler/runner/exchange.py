"""What a run keeps of its HTTP exchange: the request sent and the response's headers, masked and capped.

Masking happens here, in the runner, before anything is stored: a secret that never reaches the
database cannot leak from it, from a backup, or from a page. A header is masked when its name is
one of the credential headers (`Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`,
the `webhook-signature`), or when its name says it carries a secret (`token`, `secret`,
`password`, `api-key`, `auth`, `session`, `signature`, `credential`, `private` anywhere in it,
in any case). Query parameters of the URL whose names say so are masked the same way. The
authorization scheme (`Bearer`, `Basic`) is kept, since it tells which credential was sent.

Sizes are capped so that a run row stays small whatever a job or a target sends: each header set
keeps at most `HEADERS_LIMIT` characters of names and values (a value longer than `VALUE_LIMIT` is
cut and ends in `…`; headers past the cap are counted under the name `…`), and the body keeps its
first `BODY_LIMIT` bytes.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping
from itertools import chain
from operator import itemgetter

from scheduler.domain.models import SentRequest

MASK = "[masked]"
BODY_LIMIT = 4096
HEADERS_LIMIT = 4096
VALUE_LIMIT = 1024
LEFT_OUT = "…"
"""The name under which a header set counts the headers past its cap (no real header has it)."""

_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "webhook-signature"}
)
_SCHEME_HEADERS = frozenset({"authorization", "proxy-authorization"})
_SECRET_WORDS = re.compile(
    r"token|secret|passw|api[-_]?key|auth|session|signature|credential|private", re.IGNORECASE
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,31}")


# What a name means for its value, learnt once per name (names repeat on every call of a job).
_KEPT, _MASKED, _SCHEMED = 0, 1, 2
_KINDS: dict[str, int] = {}
_KINDS_LIMIT = 4096
_PLAIN_NAMES: set[str] = set()
"""Names seen to be kept as they are: what the usual header set is checked against at C speed."""
_VALUE = itemgetter(1)


def _kind(name: str) -> int:
    kind = _KINDS.get(name)
    if kind is None:
        lower = name.lower()
        if lower in _SCHEME_HEADERS:
            kind = _SCHEMED
        elif lower in _CREDENTIAL_HEADERS or _SECRET_WORDS.search(name) is not None:
            kind = _MASKED
        else:
            kind = _KEPT
        if len(_KINDS) >= _KINDS_LIMIT:
            _KINDS.clear()
        _KINDS[name] = kind
    return kind


def is_secret(name: str) -> bool:
    """Whether a header (or query parameter) of that name is masked before it is stored."""
    return _kind(name) != _KEPT


def masked(name: str, value: str) -> str:
    """The value as stored: the mask for a secret one (keeping an authorization scheme), else itself."""
    kind = _kind(name)
    if kind == _KEPT:
        return value
    if kind == _SCHEMED:
        scheme, _, credentials = value.strip().partition(" ")
        if credentials and _SCHEME.fullmatch(scheme):
            return f"{scheme} {MASK}"
    return MASK


def capped_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as a run stores them: masked, repeated names joined with `, `, within HEADERS_LIMIT.

    On every HTTP call's path, so the usual set (ASCII, small, no name twice) is checked and copied
    by C code, with only the names not seen before looked at one by one; the rest goes the long way.
    """
    items = list(pairs)
    flat = "".join(chain.from_iterable(items))
    if (
        len(flat) <= HEADERS_LIMIT
        and flat.isascii()
        and "\x00" not in flat
        and (len(flat) <= VALUE_LIMIT or max(map(len, map(_VALUE, items))) <= VALUE_LIMIT)
    ):
        kept = dict(items)
        if len(kept) == len(items):
            for name in kept.keys() - _PLAIN_NAMES:
                if _kind(name) == _KEPT:
                    if len(_PLAIN_NAMES) < _KINDS_LIMIT:
                        _PLAIN_NAMES.add(name)
                else:
                    kept[name] = masked(name, kept[name])
            return kept
    return _capped_one_by_one(items)


def _capped_one_by_one(items: list[tuple[str, str]]) -> dict[str, str]:
    kept: dict[str, str] = {}
    used = 0
    left_out = 0
    for raw_name, raw in items:
        name = raw_name if raw_name.isascii() else _storable(raw_name)
        value = masked(raw_name, _storable(raw))
        if len(value) > VALUE_LIMIT:
            value = value[: VALUE_LIMIT - 1] + "…"
        if name in kept:
            if used + len(value) + 2 <= HEADERS_LIMIT:
                used += len(value) + 2
                kept[name] = f"{kept[name]}, {value}"
            else:
                left_out += 1
        elif used + len(name) + len(value) <= HEADERS_LIMIT:
            used += len(name) + len(value)
            kept[name] = value
        else:
            left_out += 1
    if left_out:
        kept[LEFT_OUT] = f"{left_out} more header{'s' if left_out > 1 else ''} not recorded"
    return kept


def _storable(text: str) -> str:
    """Text that JSON in PostgreSQL takes, without lone surrogates or NUL.

    A received header may hold undecodable bytes (as lone surrogates) or NUL, either of which would
    fail the whole batch of outcomes.
    """
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-8", "replace").decode().replace("\x00", "")


def masked_url(url: str) -> str:
    """The URL with the values of secret-looking query parameters masked (`?token=[masked]`)."""
    base, mark, rest = url.partition("?")
    if not mark:
        return url
    query, hash_mark, fragment = rest.partition("#")
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        parts.append(f"{name}={MASK}" if equals and is_secret(name) else part)
    return f"{base}?{'&'.join(parts)}{hash_mark}{fragment}"


def sent_request(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> SentRequest:
    """The record of a request: masked, its headers capped, its body's first BODY_LIMIT bytes as text."""
    text = None
    truncated = False
    if body is not None:
        truncated = len(body) > BODY_LIMIT
        text = _text(body[:BODY_LIMIT], truncated=truncated)
    return SentRequest(
        method=method,
        url=masked_url(url),
        headers=capped_headers(headers.items()),
        body=text,
        body_truncated=truncated,
    )


def _text(raw: bytes, *, truncated: bool) -> str:
    """Bytes as storable text: UTF-8, invalid bytes as U+FFFD, a character cut at the cap dropped, no NUL."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(raw, final=not truncated)
    return text.replace("\x00", "") if "\x00" in text else text
