"""Shared by the browser tests: Debian's Chromium driven by Playwright (never `playwright install`).
The ``browser`` fixture (conftest.py) skips a test, with the reason shown, when Chromium is missing."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP_CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
"""People browse with an ordinary Chrome: HeadlessChrome's own user agent is (rightly) flagged as a bot."""


def is_collect(url: str) -> bool:
    """A request of the tracker to collect (``POST /collect/{site_key}``)."""
    return urlsplit(url).path.startswith("/collect/")
