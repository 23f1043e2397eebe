"""Per-request observability: a request id, an access log line, and the HTTP metrics."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.config import Settings
from scheduler.metrics import ApiMetrics, NamespaceLabels
from scheduler.web.state import CONNECTION_LOST_KEY, NAMESPACE_KEY, REQUEST_ID_KEY

access_log = structlog.get_logger("scheduler.api.access")
REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is kept when it is short and plain; anything else is replaced, not echoed.
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
# Requests that only read: one that met a lost database connection is run again, once.
_READS = frozenset({"GET", "HEAD"})


class ObservabilityMiddleware:
    """Give every request an id (the caller's X-Request-ID or a new one), log it, count it.

    A plain ASGI middleware rather than Litestar's wrapper class: it runs on every request, and the
    API's point lookups are measured against a bare route.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        """Wrap ``app`` and count into ``metrics``."""
        self.app = app
        self.metrics = metrics
        # Labelled children by label values: looking them up on the metric takes a lock each time.
        self._counted: dict[tuple[str, str, str, str], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}
        # Built from the settings at the first request (they live on the app, not yet at hand here).
        self._namespaces: NamespaceLabels | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap the request: id in, id out, one log line and two samples when it is answered."""
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = b""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = value
                break
        if not _SAFE_ID.match(request_id):
            request_id = os.urandom(16).hex().encode()
        status = 500
        retry_left = scope.get("method") in _READS
        replaced = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, replaced
            if message["type"] == "http.response.start":
                # The 503 of a read whose connection was lost is dropped, and the read runs again.
                if retry_left and scope.pop(CONNECTION_LOST_KEY, False):  # type: ignore[misc]
                    replaced = True
                    return
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id)]
            if not replaced:
                await send(message)

        scope[REQUEST_ID_KEY] = request_id.decode()  # type: ignore[literal-required]
        try:
            await self.app(scope, receive, send_with_id)
            if replaced:
                retry_left = replaced = False
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope.get("method", "GET")
            self._count(scope, method, route, status, elapsed)
            access_log.info(
                "request",
                request_id=scope[REQUEST_ID_KEY],  # type: ignore[literal-required]
                method=method,
                path=scope["path"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                namespace=scope.get(NAMESPACE_KEY),
            )

    def _count(self, scope: Scope, method: str, route: str, status: int, elapsed: float) -> None:
        # The namespace the request was authenticated for; none (an empty label) for the public
        # routes and for requests whose credentials were refused.
        namespace: str = scope.get(NAMESPACE_KEY) or ""  # type: ignore[assignment]
        key = (method, route, str(status), namespace)
        counter = self._counted.get(key)
        if counter is None:
            label = self._namespace_label(scope, namespace)
            counter = self._counted[key] = self.metrics.requests.labels(method, route, key[2], label)
        counter.inc()
        timer = self._timed.get(key[:2])
        if timer is None:
            timer = self._timed[key[:2]] = self.metrics.latency.labels(method, route)
        timer.observe(elapsed)

    def _namespace_label(self, scope: Scope, namespace: str) -> str:
        """The label of ``namespace``: itself for the first namespaces met, `_other` past the cap."""
        if not namespace:
            return ""
        if self._namespaces is None:
            settings: Settings = scope["app"].state.settings
            self._namespaces = NamespaceLabels(settings.metrics_max_namespaces)
        return self._namespaces(namespace)
