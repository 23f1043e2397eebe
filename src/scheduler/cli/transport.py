"""`scheduler jobs …` over HTTP: a method per API route, the bearer key, the errors behind exit statuses."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from scheduler import __version__

# The exit statuses `scheduler jobs --help` and the README promise: 0 done and these four.
EXIT_API_ERROR = 1  # ApiError: the API answered with an error status
EXIT_USAGE = 2  # UsageError (and argparse's own): nothing was sent
EXIT_UNREACHABLE = 3  # UnreachableError: no HTTP answer at all
EXIT_CONFLICT = 4  # ApiError 409 or 412: the request conflicts with what the server holds
REQUEST_TIMEOUT_S = 30.0

JsonObject = dict[str, Any]


class UsageError(Exception):
    """The command line asks for something the client cannot send; exit 2, nothing was sent."""


class UnreachableError(Exception):
    """No HTTP answer came back from the API at all."""

    def __init__(self, url: str, reason: str) -> None:
        """Remember which URL failed and why, for the message."""
        super().__init__(f"could not reach the scheduler API at {url}: {reason}")
        self.url = url


class ApiError(Exception):
    """The API answered with an error status; its RFC 9457 problem, when it sent one."""

    def __init__(self, status: int, detail: str, errors: Sequence[tuple[str, str]] = ()) -> None:
        """Keep the status, the problem's detail and its (field, message) pairs."""
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)

    def __str__(self) -> str:
        """The detail and the HTTP status, then one indented line per field the server named."""
        lines = [f"{self.detail} (HTTP {self.status})"]
        lines += [f"  {name}: {message}" for name, message in self.errors]
        return "\n".join(lines)

    @classmethod
    def of(cls, status: int, reason: str, text: str) -> ApiError:
        """Read a problem body; anything else (a proxy's HTML page) is shown briefly as it is."""
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            errors = [
                (str(item.get("field", "")), str(item.get("message", "")))
                for item in body.get("errors") or []
                if isinstance(item, dict)
            ]
            return cls(status, body["detail"], errors)
        snippet = " ".join(text.split())[:200]
        return cls(status, f"{reason}: {snippet}" if snippet else reason)


@dataclass(frozen=True)
class Reply:
    """A successful answer: the body exactly as the server sent it, and decoded."""

    text: str
    data: Any


class JobsApi:
    """The HTTP API of one scheduler deployment, one method per route used by the client."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        """Open a connection pool to ``base_url``; the key, when given, goes in every request."""
        import httpx  # noqa: PLC0415 - keep `scheduler --help` and the server commands fast

        self.base_url = base_url.rstrip("/")
        headers = {"user-agent": f"scheduler-cli/{__version__}", "accept": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        # Proxy and CA variables (HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE) are honoured, as curl does.
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def __enter__(self) -> Self:
        """Use as a context manager so the connections close."""
        return self

    def __exit__(self, *_: object) -> None:
        """Close the connections."""
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: JsonObject | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request; return the reply on 2xx, raise ApiError or UnreachableError otherwise."""
        import httpx  # noqa: PLC0415 - see __init__

        content = None if body is None else json.dumps(body)
        sent_headers = dict(headers or {})
        if content is not None:
            sent_headers["content-type"] = "application/json"
        try:
            response = self._http.request(
                method, path, params=dict(params or {}), content=content, headers=sent_headers
            )
        except httpx.TimeoutException:
            raise UnreachableError(self.base_url, "no answer in time") from None
        except httpx.TransportError as exc:
            raise UnreachableError(self.base_url, str(exc) or type(exc).__name__) from None
        if response.is_error:
            raise ApiError.of(response.status_code, response.reason_phrase, response.text)
        data = response.json() if response.content else None
        return Reply(response.text, data)

    def list_jobs(self, params: Mapping[str, str | int]) -> Reply:
        """GET /jobs: one page."""
        return self.call("GET", "/jobs", params=params)

    def get_job(self, job_id: str) -> Reply:
        """GET /jobs/{id}."""
        return self.call("GET", f"/jobs/{job_id}")

    def create_job(self, job: JsonObject) -> Reply:
        """POST /jobs."""
        return self.call("POST", "/jobs", body=job)

    def update_job(self, job_id: str, patch: JsonObject, *, version: int | None) -> Reply:
        """PATCH /jobs/{id}, refused by the server if the job is no longer at ``version``."""
        headers = {} if version is None else {"if-match": f'"{version}"'}
        return self.call("PATCH", f"/jobs/{job_id}", body=patch, headers=headers)

    def delete_job(self, job_id: str) -> Reply:
        """DELETE /jobs/{id}."""
        return self.call("DELETE", f"/jobs/{job_id}")

    def post_job_action(self, job_id: str, action: str) -> Reply:
        """POST /jobs/{id}/pause, /resume or /trigger."""
        return self.call("POST", f"/jobs/{job_id}/{action}")

    def list_runs(self, job_id: str, params: Mapping[str, str | int]) -> Reply:
        """GET /jobs/{id}/runs: one page, newest first."""
        return self.call("GET", f"/jobs/{job_id}/runs", params=params)

    def preview(self, request: JsonObject) -> Reply:
        """POST /schedules/preview."""
        return self.call("POST", "/schedules/preview", body=request)


def run_against_api(prog: str, base_url: str, api_key: str | None, work: Callable[[JobsApi], str]) -> int:
    """Run one command's ``work`` against the API; print its output and return the exit status.

    0 done, 1 the API refused the values, 2 bad usage, 3 the API could not be reached, 4 a conflict.
    """
    if not base_url.startswith(("http://", "https://")):
        sys.stderr.write(f"{prog}: SCHEDULER_URL must be an http:// or https:// URL, got {base_url!r}\n")
        return EXIT_USAGE
    try:
        with JobsApi(base_url, api_key) as api:
            text = work(api)
    except UsageError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return EXIT_USAGE
    except UnreachableError as exc:
        sys.stderr.write(f"{prog}: {exc}\n  is `scheduler api` running there? set SCHEDULER_URL or --url\n")
        return EXIT_UNREACHABLE
    except ApiError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        if exc.status == 401:  # noqa: PLR2004
            hint = "SCHEDULER_API_KEY is not set" if not api_key else "SCHEDULER_API_KEY was refused"
            sys.stderr.write(f"  {hint}; make a key with `scheduler keys create --namespace NAME`\n")
        return EXIT_CONFLICT if exc.status in (409, 412) else EXIT_API_ERROR
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
