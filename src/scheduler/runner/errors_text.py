"""What a failed HTTP call's run says: the cause as a person would put it, the technical detail after.

A run's `error` is read by people (the CLI, the console, an alert) long before anyone greps it, so it
starts with what went wrong in words ("connection refused by 127.0.0.1:9000", "DNS lookup failed
for billing.example"), and keeps the client's own message after it in parentheses, named by its
exception type, for whoever has to dig further.
"""

from __future__ import annotations

import errno
import ssl

import aiohttp
from yarl import URL

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONNECT_ERRNO = {
    errno.ECONNREFUSED: "connection refused by {host_port}",
    errno.ENETUNREACH: "network unreachable on the way to {host_port}",
    errno.EHOSTUNREACH: "no route to host {host_port}",
    errno.ETIMEDOUT: "connecting to {host_port} timed out",
    errno.ECONNRESET: "{host_port} reset the connection while it was being opened",
    errno.EADDRNOTAVAIL: "no local address can reach {host_port}",
}
_OS_ERRNO = {
    errno.ECONNRESET: "the target reset the connection before answering",
    errno.EPIPE: "the target closed the connection while the request was being sent",
    errno.ECONNABORTED: "the connection to the target was aborted before it answered",
}


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _host(url: URL) -> str:
    """The URL's host, with its port when it is not the scheme's default: `example.com`, `[::1]:8080`."""
    host = _bracketed(url.raw_host or "")
    port = url.port
    if port is None or _DEFAULT_PORTS.get(url.scheme) == port:
        return host
    return f"{host}:{port}"


def _detail(exc: BaseException) -> str:
    """The exception as its library put it, on one line."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _connector_text(exc: aiohttp.ClientConnectorError) -> str:
    """A connection that could not be opened: refused, unreachable, a failed lookup or TLS handshake."""
    host = _bracketed(exc.host)
    host_port = f"{host}:{exc.port}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed for {exc.host}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
        reason = cause.verify_message if isinstance(cause, ssl.SSLCertVerificationError) else None
        return f"TLS certificate of {host} not trusted: {reason or cause}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake with {host_port} failed"
    template = _CONNECT_ERRNO.get(exc.os_error.errno or 0, "could not connect to {host_port}")
    return template.format(host_port=host_port)


# Errors past the connect, first match wins (ClientPayloadError and ClientResponseError are no OSErrors).
_AFTER_CONNECT: tuple[tuple[type[BaseException], str], ...] = (
    (aiohttp.ServerDisconnectedError, "the target closed the connection before answering"),
    (aiohttp.ClientPayloadError, "the target stopped sending before the response was complete"),
    (aiohttp.ClientResponseError, "the answer from {host} is not valid HTTP"),
    (aiohttp.ClientConnectionResetError, "the target reset the connection before answering"),
)


def _plain_words(exc: BaseException, url: URL) -> str:
    """The cause of a failed call in plain words, without the technical detail."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connector_text(exc)
    template = next((text for kind, text in _AFTER_CONNECT if isinstance(exc, kind)), None)
    if template is None and isinstance(exc, OSError):
        template = _OS_ERRNO.get(exc.errno or 0)
    return (template or "the call to {host} failed").format(host=_host(url))


def call_error_text(exc: BaseException, url: URL) -> str:
    """What a run records for a call to ``url`` that ended in ``exc``: plain words, then the detail.

    ``connection refused by 127.0.0.1:9000 (ClientConnectorError: Cannot connect to host …)``.
    ``url`` is where the call had got to (the last redirect followed, if any).
    """
    return f"{_plain_words(exc, url)} ({_detail(exc)})"


def timeout_text(timeout_s: int, url: URL) -> str:
    """What a run records when its attempt ran out of time before a complete response from ``url``."""
    return f"timed out after {timeout_s} s waiting for a response from {_host(url)} (timeout_s={timeout_s})"
