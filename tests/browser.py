"""Shared by the browser tests: Debian's Chromium driven by Playwright (never `playwright install`).
The ``browser`` fixture (conftest.py) skips a test, with the reason shown, when Chromium is missing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
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


class TenantWebServer(ThreadingHTTPServer):
    """A tenant's own web site on a free port, reached as ``localhost`` (the API is ``127.0.0.1``, so the
    tracker works cross-site as on a real tenant's site). Serves ``pages`` (path: (title, body)), each
    with :attr:`head` (the tenant's snippet) in its head; ``{name}`` in a body becomes ``slots[name]`` (an
    embedded form, say). A path under a page's path is that page: a single-page app's routes reload."""

    daemon_threads = True

    def __init__(self, pages: dict[str, tuple[str, str]]) -> None:
        super().__init__(("127.0.0.1", 0), _TenantPages)
        self.pages = pages
        self.head = ""
        self.slots: dict[str, str] = {}
        self.origin = f"http://localhost:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return self.origin + path

    def html(self, path: str) -> str | None:
        page = self.pages.get(path) or next(
            (page for prefix, page in self.pages.items() if prefix != "/" and path.startswith(prefix + "/")), None
        )
        if page is None:
            return None
        title, body = page
        for name, value in self.slots.items():
            body = body.replace("{" + name + "}", value)
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>{self.head}</head>"
            f"<body>{body}</body></html>"
        )


class _TenantPages(BaseHTTPRequestHandler):
    server: TenantWebServer

    def do_GET(self) -> None:
        html = self.server.html(urlsplit(self.path).path)
        if html is None:
            self.send_error(404)
            return
        data = html.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output quiet


@contextmanager
def tenant_web_server(pages: dict[str, tuple[str, str]]) -> Iterator[TenantWebServer]:
    server = TenantWebServer(pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
