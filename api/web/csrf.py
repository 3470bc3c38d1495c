"""CSRF protection for every HTML form, hosted, membership and dashboard alike: double submit.

A random token lives in an HttpOnly cookie and in a hidden ``csrf`` field (or the ``X-CSRF-Token`` header for
the dashboard's scripts); a state-changing request must carry both, equal, and come from our own origin.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie

from api.cookies import secure_cookies
from tenants.settings import get_settings
from tenants.tracking.origins import normalize_origin

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "FormRefused", "checked_form", "csrf_cookie", "csrf_token"]

CSRF_COOKIE = "tm_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


class FormRefused(Exception):
    """A browser form that cannot be taken: rendered as a page saying why (api.web.templates.refused).

    By default that page is ``refused.html``; a form that is shown again with the message (a wrong password, a
    field to correct) names its own ``template`` and the ``context`` it needs besides ``message``."""

    def __init__(
        self,
        message: str,
        status: int = 403,
        *,
        retry_after: int | None = None,
        template: str = "refused.html",
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.template = template
        self.context = context or {}


def csrf_token(request: Request[Any, Any, Any]) -> tuple[str, bool]:
    """The browser's CSRF token, and whether it is new (then the response must set it as a cookie)."""
    existing = request.cookies.get(CSRF_COOKIE)
    return (existing, False) if existing and 32 <= len(existing) <= 100 else (secrets.token_urlsafe(32), True)


def csrf_cookie(token: str) -> Cookie:
    return Cookie(key=CSRF_COOKIE, value=token, httponly=True, secure=secure_cookies(), samesite="lax", path="/")


def _same_origin(request: Request[Any, Any, Any]) -> bool:
    origin = request.headers.get("origin")
    if not origin:  # browsers send Origin on every cross-site POST; its absence is a same-origin form
        return True
    host = request.headers.get("host", "")
    return normalize_origin(origin) in (
        normalize_origin(get_settings().base_url),
        normalize_origin(f"http://{host}"),
        normalize_origin(f"https://{host}"),
    )


async def checked_form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The posted text fields, once the request is shown to come from our own page (else :class:`FormRefused`).
    Repeated fields keep their last value; use :func:`checked_form_lists` for multi-valued ones."""
    return {key: values[-1] for key, values in (await checked_form_lists(request)).items()}


async def checked_form_lists(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    """Every value of every posted text field, after the same origin and CSRF checks."""
    if not _same_origin(request):
        raise FormRefused("this form must be sent from its own page")
    form = await request.form()
    values: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            values.setdefault(key, []).append(value)
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    sent = request.headers.get(CSRF_HEADER) or (values.get(CSRF_FIELD) or [""])[-1]
    if not cookie or not hmac.compare_digest(cookie, sent):
        raise FormRefused("the form expired; reload the page and try again")
    values.pop(CSRF_FIELD, None)
    return values


def check_request(request: Request[Any, Any, Any]) -> None:
    """The same check for a state-changing request without a form body (a script's POST with the header)."""
    if not _same_origin(request):
        raise FormRefused("this request must come from Trailmark's own pages")
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if not cookie or not hmac.compare_digest(cookie, request.headers.get(CSRF_HEADER) or ""):
        raise FormRefused("the page expired; reload it and try again")
