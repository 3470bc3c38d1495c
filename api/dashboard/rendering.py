"""How a dashboard screen answers: its layout context (navigation for the role, flash messages), redirects
after a change, and the HTML pages of its errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.response import Redirect, Template

from api.cookies import secure_cookies
from api.dashboard.auth import LoginRequired, StaffCaller
from api.dashboard.manage_input import FormShownAgain
from api.web.csrf import FormRefused
from api.web.templates import page, refused
from tenants.errors import DomainError, RateLimited
from tenants.models import UserRole

__all__ = ["DASHBOARD_EXCEPTION_HANDLERS", "NAV", "redirect", "screen"]

FLASH_COOKIE = "tm_flash"

NAV: list[tuple[str, str, str, UserRole]] = [
    ("overview", "Overview", "/app", UserRole.VIEWER),
    ("attribution", "Attribution", "/app/attribution", UserRole.VIEWER),
    ("contacts", "Contacts", "/app/contacts", UserRole.VIEWER),
    ("visitors", "Visitors", "/app/visitors", UserRole.VIEWER),
    ("sites", "Sites", "/app/sites", UserRole.VIEWER),
    ("forms", "Forms", "/app/forms", UserRole.VIEWER),
    ("links", "Links", "/app/links", UserRole.VIEWER),
    ("pages", "Pages", "/app/pages", UserRole.VIEWER),
    ("memberships", "Memberships", "/app/memberships", UserRole.VIEWER),
    ("purchases", "Purchases", "/app/purchases", UserRole.VIEWER),
    ("partners", "Partners", "/app/partners", UserRole.VIEWER),
    ("stripe", "Stripe", "/app/integrations/stripe", UserRole.VIEWER),
    ("privacy", "Privacy", "/app/privacy", UserRole.VIEWER),
    ("ad-platforms", "Ad platforms", "/app/integrations", UserRole.VIEWER),
    ("api-keys", "API keys", "/app/api-keys", UserRole.OWNER),
    ("staff", "Staff", "/app/staff", UserRole.OWNER),
    ("audit", "Audit log", "/app/audit", UserRole.OWNER),
]
"""The sections: key (``section`` of a screen), label, address, and the role that sees it."""


def screen(
    request: Request[Any, Any, Any],
    staff: StaffCaller,
    template: str,
    *,
    section: str,
    title: str,
    status: int = 200,
    **context: Any,
) -> Template:
    """A dashboard page: ``template`` (extending ``dashboard/base.html``) with the layout's context."""
    nav = [(key, label, href) for key, label, href, role in NAV if staff.can(role)]
    flash = request.cookies.get(FLASH_COOKIE)
    flashes = [tuple(unquote(flash).split(":", 1))] if flash and ":" in flash else []
    response = page(
        request, template, status=status, staff=staff, section=section, title=title, nav=nav, flashes=flashes, **context
    )
    if flash:
        response.cookies.append(Cookie(key=FLASH_COOKIE, value="", max_age=0, path="/app"))
    return response


def redirect(
    location: str, message: str | None = None, *, kind: str = "ok", cookies: list[Cookie] | None = None
) -> Redirect:
    """303 after a change (so a reload does not repeat it), with a one-time message for the next page (and any
    other ``cookies`` that page needs)."""
    cookies = list(cookies or [])
    if message:
        value = quote(f"{kind}:{message}")
        cookies.append(
            Cookie(
                key=FLASH_COOKIE,
                value=value,
                max_age=60,
                path="/app",
                httponly=True,
                secure=secure_cookies(),
                samesite="lax",
            )
        )
    return Redirect(location, status_code=303, cookies=cookies, headers={"Cache-Control": "no-store"})


def _login_required(_: Request[Any, Any, Any], exc: LoginRequired) -> Response[Any]:
    return Redirect(exc.location, status_code=303, headers={"Cache-Control": "no-store"})


def _domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
    return refused(request, FormRefused(exc.message, exc.status, retry_after=retry_after))


def _shown_again(_: Request[Any, Any, Any], exc: FormShownAgain) -> Response[Any]:
    return exc.page


DASHBOARD_EXCEPTION_HANDLERS: Any = {
    LoginRequired: _login_required,
    FormShownAgain: _shown_again,
    FormRefused: refused,
    DomainError: _domain_error,
}
"""Dashboard errors are pages: no session → the login page; a refused form, a missing row (404, also for
another tenant's ids) or a forbidden change → a page that says why, with its status; a Manage form refused for
what was typed → that form again (api.dashboard.manage_input.shown_again)."""
