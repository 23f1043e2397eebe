"""EncodedResponse answers exactly what Litestar's own Response answers, for less work per request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar import Litestar, Response, get, post
from litestar.testing import TestClient

from scheduler.api.encoded import EncodedResponse


class Shown(msgspec.Struct, kw_only=True):
    id: UUID
    at: datetime
    labels: dict[str, str]
    missing: str | None


SHOWN = Shown(
    id=UUID("0191e7a4-0000-7000-8000-000000000001"),
    at=datetime(2026, 12, 3, 9, 30, 0, 123456, tzinfo=UTC),
    labels={"team": "billing", "ünïcode": "✓"},
    missing=None,
)


@get("/litestar")
async def by_litestar() -> Response[Shown]:
    return Response(SHOWN, headers={"ETag": '"7"'})


@get("/encoded")
async def by_encoded() -> Response[Shown]:
    return EncodedResponse(SHOWN, headers={"ETag": '"7"'})


@post("/created")
async def created() -> Response[Shown]:
    """No status on the response: the route's own (201 for a POST) applies, as with Response."""
    return EncodedResponse(SHOWN, headers={"Location": "/things/1"})


@get("/teapot")
async def teapot() -> Response[Shown]:
    return EncodedResponse(SHOWN, status_code=418)


def client() -> TestClient[Litestar]:
    return TestClient(Litestar([by_litestar, by_encoded, created, teapot], openapi_config=None))


def header_set(response: Any) -> set[tuple[str, str]]:
    return {(name.lower(), value) for name, value in response.headers.items()}


class TestSameAnswer:
    """The body bytes, status and headers are the ones Litestar's Response would have sent."""

    def test_body_status_and_headers_match_litestars_response(self) -> None:
        with client() as http:
            litestar, encoded = http.get("/litestar"), http.get("/encoded")
        assert encoded.status_code == litestar.status_code == 200
        assert encoded.content == litestar.content
        assert header_set(encoded) == header_set(litestar)
        assert encoded.headers["etag"] == '"7"'
        assert encoded.headers["content-type"] == "application/json"
        assert int(encoded.headers["content-length"]) == len(encoded.content)

    def test_the_routes_status_applies_when_the_response_sets_none(self) -> None:
        with client() as http:
            answer = http.post("/created")
        assert answer.status_code == 201
        assert answer.headers["location"] == "/things/1"

    def test_a_status_of_its_own_wins(self) -> None:
        with client() as http:
            assert http.get("/teapot").status_code == 418


class TestReadsAsAResponse:
    """Code that keeps an answer (the Idempotency-Key replay) reads it as any Litestar Response."""

    def test_content_status_and_headers_are_there_before_it_is_sent(self) -> None:
        answer = EncodedResponse(SHOWN, status_code=201, headers={"Location": "/jobs/1", "ETag": '"1"'})
        assert isinstance(answer, Response)
        assert answer.content is SHOWN
        assert answer.status_code == 201
        assert answer.headers.get("Location") == "/jobs/1"
        assert answer.headers.get("ETag") == '"1"'
