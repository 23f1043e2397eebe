"""Per-request observability: a request id, an access log line, and the HTTP metrics."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.api.state import NAMESPACE_KEY
from scheduler.metrics import ApiMetrics

access_log = structlog.get_logger("scheduler.api.access")
REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is kept when it is short and plain; anything else is replaced, not echoed.
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


class ObservabilityMiddleware(ASGIMiddleware):
    """Give every request an id (the caller's X-Request-ID or a new one), log it, count it."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, metrics: ApiMetrics) -> None:
        """Count into ``metrics``."""
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Wrap the request: id in, id out, one log line and two samples when it is answered."""
        started = time.perf_counter()
        request_id = b""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = value
                break
        if not _SAFE_ID.match(request_id):
            request_id = uuid.uuid4().hex.encode()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id)]
            await send(message)

        rid = request_id.decode()
        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                await next_app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route = scope.get("path_template") or "unmatched"
                method = scope.get("method", "GET")
                self.metrics.requests.labels(method, route, str(status)).inc()
                self.metrics.latency.labels(method, route).observe(elapsed)
                access_log.info(
                    "request",
                    method=method,
                    path=scope["path"],
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    namespace=scope.get(NAMESPACE_KEY),
                )
