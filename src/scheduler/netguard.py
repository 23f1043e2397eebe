"""Outbound address rules: which addresses a job's HTTP call may connect to, enforced at connect time.

A call may not reach loopback, private, link-local, carrier-grade NAT, multicast, unspecified or
reserved addresses, nor their IPv6 spellings (IPv4-mapped, NAT64, 6to4, Teredo), unless an operator
opens a network with ``SCHEDULER_HTTP_ALLOW_NETS``. The check runs inside the HTTP client's network
backend: a host name is resolved once, every address it resolves to is checked, and the connection
goes to exactly those checked addresses, so a name that changes its answer between a check and a
connect (DNS rebinding) cannot slip through. Redirect hops pass the same backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TypeAlias
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

from scheduler.config import Network

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver: TypeAlias = Callable[[str, int], Awaitable[list[IPAddress]]]

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


class BlockedAddressError(httpx.ConnectError):
    """A call was refused because an address it would connect to is not allowed; says which and why."""


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


# ------------------------------------------------------------------------ the guarded transport


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


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the rules allow.

    The name in a URL is resolved here, once; the inner backend is handed the checked address
    itself, so no second lookup can return something else. TLS still verifies the URL's host name,
    because httpcore starts TLS on the returned stream with the original host.
    """

    def __init__(
        self,
        allow_nets: Sequence[Network] = (),
        *,
        resolve: Resolver = system_resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        """Check against ``allow_nets``; resolve with ``resolve``; connect through ``inner``."""
        self.allow_nets = tuple(allow_nets)
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host``; raises BlockedAddressError if any is not allowed."""
        literal = literal_address(host)
        if literal is not None:
            reason = blocked_reason(literal, self.allow_nets)
            if reason is not None:
                spelled = "" if str(literal) == host.strip("[]") else f" (written {host})"
                raise BlockedAddressError(f"blocked: {literal}{spelled} is {reason}; {ALLOW_HINT}")
            return [literal]
        try:
            addresses = await self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        for address in addresses:
            reason = blocked_reason(address, self.allow_nets)
            if reason is not None:
                raise BlockedAddressError(f"blocked: {host} resolves to {address}, {reason}; {ALLOW_HINT}")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve, check every address, then connect to the first checked address that answers."""
        failure: Exception | None = None
        for address in await self.checked_addresses(host, port):
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        if failure is None:  # pragma: no cover - checked_addresses never returns an empty list
            raise httpcore.ConnectError(f"no address to connect to for {host}")
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109, ARG002 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,  # noqa: ARG002
    ) -> httpcore.AsyncNetworkStream:
        """Calls never go to local sockets."""
        raise BlockedAddressError(f"blocked: {path} is a local socket")

    async def sleep(self, seconds: float) -> None:
        """Sleep as the inner backend does (httpcore uses it between connection retries)."""
        await self._inner.sleep(seconds)


# httpcore's errors and the httpx errors callers catch; subclasses come before their bases.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """Let callers catch httpx's errors whatever httpcore raised underneath."""
    try:
        yield
    except Exception as exc:
        for core_error, httpx_error in _HTTPX_ERRORS:
            if isinstance(exc, core_error):
                raise httpx_error(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    """A response body read from the pool, with httpcore's errors turned into httpx's."""

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _as_httpx_errors():
                await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose every connection, redirect hops included, passes GuardedBackend."""

    def __init__(
        self,
        *,
        allow_nets: Sequence[Network] = (),
        max_connections: int = 100,
        resolve: Resolver = system_resolve,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """One connection pool, at most ``max_connections`` open and as many kept alive."""
        self.backend = GuardedBackend(allow_nets, resolve=resolve)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            network_backend=self.backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request (one hop) through the guarded pool."""
        if not isinstance(request.stream, httpx.AsyncByteStream):  # pragma: no cover - AsyncClient
            raise TypeError("GuardedTransport serves httpx.AsyncClient only")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            core_response = await self._pool.handle_async_request(core_request)
        if not isinstance(core_response.stream, AsyncIterable):  # pragma: no cover - the async pool's
            raise TypeError("expected an asynchronous response stream")
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_ResponseStream(core_response.stream),
            extensions=core_response.extensions,
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()
