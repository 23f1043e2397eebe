"""Outbound address rules: which addresses a job's HTTP call may connect to, enforced at connect time.

A call may not reach loopback, private, link-local, carrier-grade NAT, multicast, unspecified or
reserved addresses, nor their IPv6 spellings (IPv4-mapped, NAT64, 6to4, Teredo), unless an operator
opens a network with ``SCHEDULER_HTTP_ALLOW_NETS``. The checks live inside the runner's aiohttp
session (`OutboundClient`): its resolver checks every address a name resolves to and hands aiohttp
exactly those checked addresses (so a name that changes its answer between a check and a connect,
DNS rebinding, cannot slip through), and its socket factory checks the address of every connection
opened, which covers IP-literal hosts (aiohttp skips the resolver for them) and answers served from
aiohttp's DNS cache. Redirect hops open their connections through the same session.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Literal, Self, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from scheduler.config import Network

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver: TypeAlias = Callable[[str, int], Awaitable[list[IPAddress]]]
RecordExchange: TypeAlias = Literal["all", "failures", "off"]

ALLOW_HINT = "SCHEDULER_HTTP_ALLOW_NETS can open it"

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
_PRIVATE = "a private address"
_RESERVED = "a reserved address"
_DOCUMENTATION = "a documentation address (reserved)"

# First match wins, so narrower ranges come before the ranges that contain them.
_IPV4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "in 0.0.0.0/8, which reaches this host"),
    (_V4("10.0.0.0/8"), _PRIVATE),
    (_V4("100.64.0.0/10"), "a carrier-grade NAT (shared) address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("169.254.169.254/32"), "the cloud metadata address (link-local)"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("172.16.0.0/12"), _PRIVATE),
    (_V4("192.0.0.0/24"), "an IETF protocol assignment (reserved)"),
    (_V4("192.0.2.0/24"), _DOCUMENTATION),
    (_V4("192.168.0.0/16"), _PRIVATE),
    (_V4("198.18.0.0/15"), "a benchmarking address (reserved)"),
    (_V4("198.51.100.0/24"), _DOCUMENTATION),
    (_V4("203.0.113.0/24"), _DOCUMENTATION),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("255.255.255.255/32"), "the broadcast address"),
    (_V4("240.0.0.0/4"), _RESERVED),
)

_IPV6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "the unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    # Local-use NAT64 (RFC 8215) translates into whatever IPv4 network its operator chose, with the
    # IPv4 address at a position that depends on the operator's prefix length: block it whole.
    (_V6("64:ff9b:1::/48"), "a local-use NAT64 address, which can reach any network behind it"),
    # The rest of ::/8 (IETF-reserved; deprecated IPv4-compatible forms among it) is no destination.
    (_V6("::/8"), _RESERVED),
    (_V6("100::/64"), "a discard-only address (reserved)"),
    (_V6("2001:db8::/32"), _DOCUMENTATION),
    (_V6("fc00::/7"), "a unique local (private) address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address (deprecated)"),
    (_V6("ff00::/8"), "a multicast address"),
)

_IPV4_MAPPED = _V6("::ffff:0:0/96")
_NAT64_WELL_KNOWN = _V6("64:ff9b::/96")


class BlockedAddressError(aiohttp.ClientConnectionError):
    """A call was refused because an address it would connect to is not allowed; says which and why.

    Not an OSError on purpose: aiohttp wraps OSErrors from its resolver and socket factory into
    generic connection errors, while this one must reach the caller as itself (the run is final).
    """


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries traffic to, with the name of the form, if any."""
    if address in _IPV4_MAPPED and address.ipv4_mapped is not None:
        return "an IPv4-mapped form", address.ipv4_mapped
    if address in _NAT64_WELL_KNOWN:
        return "a NAT64 form", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "a 6to4 form", address.sixtofour
    if address.teredo is not None:
        return "a Teredo form", address.teredo[1]
    return None


def blocked_reason(address: IPAddress, allow_nets: Sequence[Network] = ()) -> str | None:
    """Why a call may not connect to ``address`` (e.g. "a loopback address"); None when it may."""
    if any(address in net for net in allow_nets if net.version == address.version):
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return next((reason for net, reason in _IPV4_RULES if address in net), None)
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        form, inner = embedded
        inner_reason = blocked_reason(inner, allow_nets)
        return None if inner_reason is None else f"{form} of {inner}, {inner_reason}"
    return next((reason for net, reason in _IPV6_RULES if address in net), None)


# --------------------------------------------------------------------------- numeric host names


def _inet_aton_part(part: str) -> int | None:
    """One dot-separated part of a legacy numeric IPv4 host: decimal, 0-prefixed octal or 0x hex."""
    lowered = part.lower()
    if lowered.startswith("0x"):
        digits, base, alphabet = lowered[2:], 16, "0123456789abcdef"
    elif len(part) > 1 and part.startswith("0"):
        digits, base, alphabet = part[1:], 8, "01234567"
    else:
        digits, base, alphabet = part, 10, "0123456789"
    if not digits:
        return 0 if base == 16 else None  # noqa: PLR2004 - "0x" alone means zero to inet_aton
    if any(ch not in alphabet for ch in digits):
        return None
    return int(digits, base)


def numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host written in any inet_aton spelling means, as resolvers read it.

    ``2130706433``, ``0x7f.1``, ``0177.0.0.1`` and ``127.1`` all mean 127.0.0.1; None when ``host``
    is not a number of that kind.
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # a trailing dot, as in a fully qualified name
    if not 1 <= len(parts) <= 4:  # noqa: PLR2004
        return None
    numbers: list[int] = []
    for part in parts:
        number = _inet_aton_part(part)
        if number is None:
            return None
        numbers.append(number)
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):  # noqa: PLR2004
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host names literally (any IPv4 spelling, or IPv6 with or without brackets)."""
    bare = host.removeprefix("[").removesuffix("]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return numeric_ipv4(bare)


def canonical_url(url: str) -> str:
    """Rewrite a URL whose host is an unusual IPv4 spelling (``http://0177.0.0.1/``) to dotted form.

    Resolvers read such hosts as the address they encode, while URL parsers refuse some of them;
    rewriting first makes the call go, and be checked, exactly as the address it names.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if not host or ":" in host:
        return url
    address = numeric_ipv4(host)
    if address is None or str(address) == host:
        return url
    try:
        port = parts.port
    except ValueError:
        return url
    netloc = str(address) if port is None else f"{address}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


# ------------------------------------------------------------------------ the guarded session


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for ``host``, in its order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in found:
            found.append(address)
    return found


def check_literal(host: str, allow_nets: Sequence[Network] = ()) -> IPAddress | None:
    """The address ``host`` names literally, refused if the rules block it; None for a name."""
    literal = literal_address(host)
    if literal is None:
        return None
    reason = blocked_reason(literal, allow_nets)
    if reason is not None:
        spelled = "" if str(literal) == host.strip("[]") else f" (written {host})"
        raise BlockedAddressError(f"blocked: {literal}{spelled} is {reason}; {ALLOW_HINT}")
    return literal


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that answers only with addresses the rules allow.

    A name is refused when any of its addresses is blocked (not just skipped): a name that mixes a
    public and a private answer is a rebinding attempt, not a target. aiohttp connects to exactly the
    addresses returned here, and caches them (they stay checked; the socket factory checks again).
    """

    def __init__(self, allow_nets: Sequence[Network] = (), *, resolve: Resolver = system_resolve) -> None:
        """Check against ``allow_nets``; look names up with ``resolve``."""
        self.allow_nets = tuple(allow_nets)
        self._resolve = resolve

    async def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host``; raises BlockedAddressError if any is not allowed."""
        literal = check_literal(host, self.allow_nets)
        if literal is not None:
            return [literal]
        try:
            addresses = await self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            # Two arguments, so that aiohttp's connection error shows the message (its strerror).
            raise socket.gaierror(socket.EAI_NONAME, f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"cannot resolve {host}: no addresses")
        for address in addresses:
            reason = blocked_reason(address, self.allow_nets)
            if reason is not None:
                raise BlockedAddressError(f"blocked: {host} resolves to {address}, {reason}; {ALLOW_HINT}")
        return addresses

    async def resolve(
        self,
        host: str,
        port: int = 0,
        family: socket.AddressFamily = socket.AF_UNSPEC,  # noqa: ARG002 - both families are checked
    ) -> list[ResolveResult]:
        """The resolver interface of aiohttp: the checked addresses of ``host``."""
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET if address.version == 4 else socket.AF_INET6,  # noqa: PLR2004
                proto=socket.IPPROTO_TCP,
                flags=socket.AI_NUMERICHOST,
            )
            for address in await self.checked_addresses(host, port)
        ]

    async def close(self) -> None:
        """Nothing to release: lookups go through the event loop's resolver."""


def guarded_socket_factory(
    allow_nets: Sequence[Network] = (),
) -> Callable[[aiohttp.AddrInfoType], socket.socket]:
    """A socket factory for aiohttp that refuses to open a socket towards a blocked address.

    aiohttp calls it for every connection it opens, whatever produced the address (the resolver,
    its DNS cache, or an IP-literal host that never reaches the resolver): the last word.
    """
    allowed = tuple(allow_nets)

    def open_socket(addr_info: aiohttp.AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise BlockedAddressError(f"blocked: {sockaddr} is a local socket")
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        reason = blocked_reason(address, allowed)
        if reason is not None:
            raise BlockedAddressError(f"blocked: {address} is {reason}; {ALLOW_HINT}")
        return socket.socket(family=family, type=type_, proto=proto)

    return open_socket


class OutboundClient:
    """The runner's one HTTP session: every connection checked, pooled per host, nothing from the environment.

    One session and one connector per runner, opened on entry: connections are kept alive per host
    and reused by later calls; at most ``max_connections`` are open at once (the runner's
    concurrency). No proxy from the environment (a proxy would connect on our behalf, past the
    address rules), no cookie jar (a target's cookie must never reach another tenant's call), no
    automatic decompression (the caller inflates at most what it keeps), no redirects (the caller
    follows them itself, hop by hop, when an action asks), and no timeout of aiohttp's own (the
    caller bounds each attempt as a whole).
    """

    # An idle connection is dropped before the 5 s that Apache and Node.js servers keep one: a call
    # must not be sent on a connection the server is closing (aiohttp retries only idempotent ones).
    KEEPALIVE_S = 4.0
    DNS_CACHE_S = 10

    def __init__(
        self,
        *,
        allow_nets: Sequence[Network] = (),
        max_connections: int = 100,
        resolve: Resolver = system_resolve,
        ssl_context: ssl.SSLContext | None = None,
        record_exchange: RecordExchange = "all",
    ) -> None:
        """Check against ``allow_nets``; hold at most ``max_connections``; resolve with ``resolve``.

        ``record_exchange`` says which calls' runs keep the request and the response's headers
        (`SCHEDULER_HTTP_RECORD_EXCHANGE`): every call, only the calls that did not succeed, or none.
        """
        self.allow_nets = tuple(allow_nets)
        self.max_connections = max_connections
        self.record_exchange: RecordExchange = record_exchange
        self.resolver = GuardedResolver(self.allow_nets, resolve=resolve)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session (the client must have been entered)."""
        if self._session is None:
            raise RuntimeError("OutboundClient is not open: use `async with client:`")
        return self._session

    async def __aenter__(self) -> Self:
        """Open the session (it needs a running event loop)."""
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=self.KEEPALIVE_S,
            use_dns_cache=True,
            ttl_dns_cache=self.DNS_CACHE_S,
            resolver=self.resolver,
            socket_factory=guarded_socket_factory(self.allow_nets),
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None),
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close every pooled connection."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
