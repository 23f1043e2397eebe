"""The web console at /ui: server-rendered pages over the same operations as the API."""

from __future__ import annotations

from scheduler.ui.jobs import JobPages
from scheduler.ui.runs import RunPages
from scheduler.ui.signin import SignInPages

CONSOLE_PAGES = (SignInPages, JobPages, RunPages)
"""The console's page groups, all under /ui, that the API mounts."""
