"""Driving the dashboard as staff do: log in (over HTTP or in Chromium), check a screen with axe-core, and keep
its screenshot with the run's artifacts (``artifacts/screenshots``, or ``$TRAILMARK_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from tenants.isolation import tenant_session
from tenants.models import TenantUser, UserRole
from tenants.security.passwords import hash_password

__all__ = ["ARTIFACTS", "add_staff", "check_screen", "csrf_of", "login_browser", "login_http"]

ARTIFACTS = Path(os.environ.get("TRAILMARK_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "artifacts")
SERIOUS = ("serious", "critical")
PASSWORD = "correct horse battery"
"""The password of every test tenant's owner (conftest's make_tenant) and of staff added here."""
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def add_staff(tenant_id: UUID, email: str, role: UserRole, password: str = PASSWORD) -> TenantUser:
    """A staff member of ``role`` who can log in with ``password`` (as an accepted invitation leaves them)."""
    with tenant_session(tenant_id) as session:
        user = TenantUser(email=email, password_hash=hash_password(password), role=role)
        session.add(user)
        session.flush()
        session.refresh(user)
        session.expunge(user)
        return user


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def login_http(base_url: str, workspace: str, email: str, password: str = PASSWORD) -> httpx.Client:
    """An HTTP client holding a staff session (and the CSRF cookie), as a browser would after logging in."""
    client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)
    token = csrf_of(client.get("/app/login").text)
    answer = client.post(
        "/app/login", data={"csrf": token, "workspace": workspace, "email": email, "password": password}
    )
    assert answer.status_code == 303, answer.text
    return client


def login_browser(
    page: Any, base_url: str, workspace: str, email: str, password: str = "correct horse battery"
) -> None:
    """Log in through the login form in Chromium; ends on the overview."""
    page.goto(f"{base_url}/app/login")
    page.get_by_label("Workspace").fill(workspace)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/app(?:[/?].*)?$"))


def check_screen(page: Any, name: str) -> None:
    """Save the screen's screenshot as ``<name>.png`` and fail on any serious or critical axe-core violation."""
    from axe_playwright_python.sync_playwright import Axe

    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    results = Axe().run(page)
    serious = [v for v in results.response["violations"] if v.get("impact") in SERIOUS]
    assert not serious, "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}" for v in serious
    )
