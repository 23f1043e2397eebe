"""/docs: Swagger UI from the package's own files, rendered by a real browser that cannot leave the host."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx

from scheduler.api.openapi import STATIC_DIR
from tests.conftest import start_api

VENDORED = STATIC_DIR / "swagger-ui"
RENDER_TIMEOUT_MS = 30_000


def _operations(base: str) -> list[tuple[str, str, str, str]]:
    """(tag, operationId, METHOD, path) of every operation the running API documents."""
    document = httpx.get(f"{base}/schema/openapi.json").json()
    return [
        (operation["tags"][0], operation["operationId"], method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


class TestDocsPageServed:
    """The page and its assets come from the service itself."""

    def test_docs_leads_to_a_page_whose_assets_are_all_local(self, procs):
        base = start_api(procs)
        page = httpx.get(f"{base}/docs", follow_redirects=True)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources, page.text
        assert all(source.startswith("/docs/assets/") for source in sources), sources
        for source in sources:
            asset = httpx.get(f"{base}{source}")
            assert asset.status_code == 200, source
        bundle = httpx.get(f"{base}/docs/assets/swagger-ui/swagger-ui-bundle.js")
        assert bundle.content == (VENDORED / "swagger-ui-bundle.js").read_bytes()

    def test_the_assets_need_no_key_when_auth_is_required(self, procs):
        base = start_api(procs, auth="required")
        for path in (
            "/docs/assets/docs.js",
            "/docs/assets/swagger-ui/swagger-ui.css",
            "/schema/openapi.json",
        ):
            assert httpx.get(f"{base}{path}").status_code == 200, path
        assert httpx.get(f"{base}/jobs").status_code == 401


class TestDocsPageInABrowser:
    """Headless chromium with every host but 127.0.0.1 unresolvable renders the operations."""

    def test_every_operation_is_rendered_and_nothing_is_fetched_from_elsewhere(self, procs, offline_page):
        base = start_api(procs)
        page = offline_page.page
        page.goto(f"{base}/docs", wait_until="load")
        create = page.locator("#operations-jobs-createJob")
        create.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
        assert create.locator(".opblock-summary-method").inner_text() == "POST"
        assert create.locator(".opblock-summary-path").inner_text().replace("\u200b", "") == "/jobs"
        operations = _operations(base)
        assert len(operations) >= 15
        for tag, operation_id, method, path in operations:
            block = page.locator(f"#operations-{tag}-{operation_id}")
            assert block.is_visible(), f"{method} {path} ({operation_id}) is not on the page"
        assert page.locator(".swagger-ui .info .title").inner_text().startswith("Scheduler")
        assert offline_page.refused == []

    def test_authorize_takes_a_key_and_try_it_out_sends_it(self, procs, offline_page):
        base = start_api(procs, auth="required")
        made = subprocess.run(
            [sys.executable, "-m", "scheduler", "keys", "create", "--namespace", "docs"],
            env=procs.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        key = made.stdout.strip()
        page = offline_page.page
        page.goto(f"{base}/docs", wait_until="load")
        page.locator("button.authorize").first.click(timeout=RENDER_TIMEOUT_MS)
        dialog = page.locator(".modal-ux")
        dialog.locator("input").first.fill(key)
        dialog.locator("button.authorize").click()
        dialog.locator("button.btn-done").click()

        operation = page.locator("#operations-jobs-listJobs")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        with page.expect_response(
            lambda response: "/jobs?" in response.url or response.url.endswith("/jobs")
        ) as answer:
            operation.locator("button.execute").click()
        response = answer.value
        assert response.status == 200
        assert response.request.headers["authorization"] == f"Bearer {key}"
        assert response.json() == {"items": [], "next_cursor": None}
        assert offline_page.refused == []
