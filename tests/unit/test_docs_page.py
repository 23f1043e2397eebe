"""The Swagger UI files /docs serves, read from the package: the release VENDORED.md records.

The page served and rendered in a browser: tests/acceptance/test_docs_page.py.
"""

from __future__ import annotations

import hashlib
import re

from scheduler.api.openapi import STATIC_DIR

VENDORED = STATIC_DIR / "swagger-ui"


class TestVendoredSwaggerUi:
    """The Swagger UI files in the package are the release VENDORED.md names, with its licence."""

    def test_the_files_match_the_recorded_hashes(self):
        recorded = dict(
            re.findall(
                r"^\| (\S+) \| ([0-9a-f]{64}) \|$", (VENDORED / "VENDORED.md").read_text(), re.MULTILINE
            )
        )
        assert set(recorded) == {"swagger-ui-bundle.js", "swagger-ui.css"}
        for name, digest in recorded.items():
            assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == digest, name

    def test_the_licence_and_notices_ship_with_them(self):
        assert "Apache License" in (VENDORED / "LICENSE").read_text()
        assert (VENDORED / "NOTICE").read_text().startswith("swagger-ui")
        assert (VENDORED / "swagger-ui-bundle.js.LICENSE.txt").stat().st_size > 0

    def test_it_is_swagger_ui_5_which_reads_openapi_3_1(self):
        assert re.search(r"swagger-ui-dist@5\.\d+\.\d+", (VENDORED / "VENDORED.md").read_text())
