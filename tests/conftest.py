"""Shared fixtures: a migrated test database reached as the app role, Redis, a live API process
and a real Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.services import TestServices, libpq_url, start_test_services, test_secret_keys, test_signing_keys

REPO = Path(__file__).resolve().parents[1]
_services: TestServices | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Point the whole process at the test services before any app module reads its settings."""
    global _services
    if hasattr(config, "workerinput"):
        return
    _services = start_test_services()
    os.environ.update(_services.env())
    os.environ["TRAILMARK_SIGNING_KEYS"] = test_signing_keys()
    os.environ["TRAILMARK_SECRET_KEYS"] = test_secret_keys()
    os.environ["TRAILMARK_DATA_DIR"] = tempfile.mkdtemp(prefix="trailmark-test-data-")
    # Workers deliver mail to the `mailbox` fixture's SMTP server (a real one, on 127.0.0.1).
    from tenants.embedded import free_port

    os.environ["TRAILMARK_SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    # Workers send conversions to the `ad_platforms` fixture's fakes (a real HTTP server, on 127.0.0.1).
    platforms = f"http://127.0.0.1:{free_port()}"
    os.environ["TRAILMARK_META_API_URL"] = f"{platforms}/meta"
    os.environ["TRAILMARK_GOOGLE_ADS_API_URL"] = f"{platforms}/google"
    os.environ["TRAILMARK_GOOGLE_OAUTH_TOKEN_URL"] = f"{platforms}/google/token"
    os.environ["TRAILMARK_GOOGLE_OAUTH_AUTHORIZE_URL"] = f"{platforms}/google/authorize"
    os.environ["TRAILMARK_TIKTOK_API_URL"] = f"{platforms}/tiktok"
    os.environ["TRAILMARK_LINKEDIN_API_URL"] = f"{platforms}/linkedin"
    os.environ["TRAILMARK_GOOGLE_CLIENT_ID"] = "trailmark-test.apps.example"
    os.environ["TRAILMARK_GOOGLE_CLIENT_SECRET"] = "test-client-secret"
    # A batch whose sender was killed is taken again after this lease (120 s in production).
    os.environ["TRAILMARK_CONVERSIONS_LEASE_MS"] = "15000"
    from tenants.isolation.migrate import migrate

    migrate(_services.owner_url, _services.app_url)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _services is not None:
        from tenants.isolation import dispose_engine

        dispose_engine()
        _services.close()


@pytest.fixture(scope="session")
def services() -> TestServices:
    assert _services is not None
    return _services


@pytest.fixture(scope="session")
def owner_url(services: TestServices) -> str:
    return libpq_url(services.owner_url)


def child_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(overrides)
    return env


def wait_until(predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(interval)


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    base_url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_api_server(port: int | None = None, *, workers: int = 1, **env: str) -> LiveServer:
    from tenants.embedded import free_port

    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "api", "--workers", str(workers)],
        cwd=REPO,
        env=child_env(TRAILMARK_PORT=str(port), TRAILMARK_PUBLIC_URL=f"http://127.0.0.1:{port}", **env),
    )
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"API exited with {process.returncode}")
        try:
            return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 30, "API process to answer /health", interval=0.1)
    return LiveServer(process, base_url)


def log_file(name: str) -> Any:
    """Child processes log to files under the session's data folder (kept for reading after a failure)."""
    directory = Path(os.environ["TRAILMARK_DATA_DIR"]) / "logs"
    directory.mkdir(parents=True, exist_ok=True)
    return open(directory / f"{name}-{time.time_ns()}.log", "wb")


def start_worker(**env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker", "--concurrency", "2"],
        cwd=REPO,
        env=child_env(**env),
        stdout=log_file("worker"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="session")
def api_server() -> Iterator[LiveServer]:
    server = start_api_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker() -> Iterator[subprocess.Popen[bytes]]:
    process = start_worker()
    yield process
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def client() -> Iterator[Any]:
    from litestar.testing import TestClient

    from api.app import create_app

    with TestClient(app=create_app()) as test_client:
        yield test_client


@dataclass
class TenantHandle:
    tenant_id: UUID
    slug: str
    api_key: str
    owner_email: str = ""
    owner_password: str = "correct horse battery"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture
def make_tenant() -> Callable[..., TenantHandle]:
    """Sign up a fresh tenant through the service the API uses."""
    from tenants.accounts.service import signup

    def make(name: str = "Acme") -> TenantHandle:
        owner = f"owner@{name.lower()}.example"
        result = signup(name=name, owner_email=owner, password="correct horse battery")
        return TenantHandle(result.tenant.id, result.tenant.slug, result.api_key.secret, owner)

    return make


def start_beat(**env: str) -> subprocess.Popen[bytes]:
    """Beat sends the ingest drain every second (and the outbox sweep)."""
    schedule_dir = tempfile.mkdtemp(prefix="trailmark-beat-")
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "beat"],
        cwd=REPO,
        env=child_env(TRAILMARK_DATA_DIR=schedule_dir, **env),
        stdout=log_file("beat"),
        stderr=subprocess.STDOUT,
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def pipeline(worker: subprocess.Popen[bytes]) -> Iterator[None]:
    """The real tracking pipeline: a Celery worker plus beat draining the ingest stream."""
    beat = start_beat()
    yield
    stop(beat)


@dataclass
class SiteHandle:
    tenant: TenantHandle
    site_id: UUID
    site_key: str


def make_site(tenant: TenantHandle, origins: list[str], **options: Any) -> SiteHandle:
    from tenants.isolation import tenant_session
    from tenants.tracking.sites import create_site

    with tenant_session(tenant.tenant_id) as session:
        site = create_site(session, name="Shop", allowed_origins=origins, **options)
        return SiteHandle(tenant, site.id, site.site_key)


def stored_visits(tenant_id: UUID) -> int:
    from sqlalchemy import text

    from tenants.isolation import tenant_session

    with tenant_session(tenant_id) as session:
        return int(session.execute(text("SELECT count(*) FROM visits")).scalar() or 0)


@pytest.fixture
def private_redis() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A Redis of this test's own, with AOF on (as in production), that the test can stop and restart."""
    from tenants.embedded import free_port, start_redis_server

    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="trailmark-redis-"))
    process: dict[str, Any] = {"server": start_redis_server(directory, port)}

    def down() -> None:
        stop(process["server"])

    def up() -> None:
        process["server"] = start_redis_server(directory, port)

    yield f"redis://127.0.0.1:{port}/0", down, up
    if process["server"].poll() is None:
        stop(process["server"])


def token_after(collect_answer: Any, sent: str | None) -> str:
    """The visitor token a browser holds once collect answered (as tracker.js does): the new one in the
    answer, or, when the answer is empty, the one it sent."""
    assert collect_answer.status_code == 202, collect_answer.text
    token = collect_answer.json()["token"] if collect_answer.content else sent
    assert token, "collect gave no token to a browser that had none"
    return str(token)


def wait_stored(tenant_id: UUID, expected: int, timeout: float = 60) -> None:
    """Wait until the tenant has ``expected`` visits; fail on more (a duplicate) or on never getting there."""

    def reached() -> bool:
        count = stored_visits(tenant_id)
        assert count <= expected, f"{count} visits stored, expected {expected}: duplicates"
        return count == expected

    wait_until(reached, timeout, f"{expected} visits stored", interval=0.2)


@dataclass
class Mailbox:
    """Messages received by a real local SMTP server (aiosmtpd), newest last."""

    messages: list[Any]

    def wait_for(self, to: str, subject_part: str, timeout: float = 60) -> Any:
        def find() -> Any:
            for message in reversed(self.messages):
                if to.lower() in message["To"].lower() and subject_part in message["Subject"]:
                    return message
            return None

        return wait_until(find, timeout, f"mail to {to} about {subject_part!r}", interval=0.1)

    def about(self, to: str, subject_part: str) -> list[Any]:
        """The messages to ``to`` about ``subject_part`` received so far, oldest first."""
        return [m for m in list(self.messages) if to.lower() in m["To"].lower() and subject_part in m["Subject"]]

    def links(self, to: str, subject_part: str, path_part: str, count: int = 1, timeout: float = 60) -> list[str]:
        """The links containing ``path_part`` (make it name the tenant or site: the mailbox serves the
        whole session) in mails to ``to`` about ``subject_part``, waiting until there are ``count``;
        in the order received, which need not be the order sent."""
        import re

        pattern = re.compile(r"https?://\S*" + re.escape(path_part) + r"\S*")

        def found() -> list[str]:
            bodies = (m.get_payload(decode=True).decode() for m in self.about(to, subject_part))
            return [match.group(0) for body in bodies if (match := pattern.search(body))]

        return list(
            wait_until(lambda: len(found()) >= count and found(), timeout, f"{count} {path_part} link(s) to {to}")
        )


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    from email import message_from_bytes
    from urllib.parse import urlsplit

    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
            received.append(message_from_bytes(envelope.content))
            return "250 OK"

    port = urlsplit(os.environ["TRAILMARK_SMTP_URL"]).port
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield Mailbox(received)
    controller.stop()


@pytest.fixture(scope="session")
def ad_platforms() -> Iterator[Any]:
    """Meta, Google Ads and TikTok faked by one real HTTP server at the URLs the workers were given."""
    from urllib.parse import urlsplit

    from tests.support.ad_platforms import FakeAdPlatforms

    fake = FakeAdPlatforms(urlsplit(os.environ["TRAILMARK_META_API_URL"]).port or 0)
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright; the test is skipped (with the reason) without it."""
    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
