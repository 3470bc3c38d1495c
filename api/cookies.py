"""The cookies Trailmark's own responses set: one definition each."""

from __future__ import annotations

from litestar.datastructures import Cookie

from tenants.settings import get_settings
from tenants.tracking.visitors import VISITOR_COOKIE, VISITOR_COOKIE_MAX_AGE

__all__ = ["member_session_cookie", "secure_cookies", "session_cookie_name", "visitor_cookie"]


def secure_cookies() -> bool:
    """Served over https: cookies are Secure (and the session cookie can carry ``__Host-``)."""
    return get_settings().base_url.startswith("https://")


def visitor_cookie(token: str, max_age: int = VISITOR_COOKIE_MAX_AGE) -> Cookie:
    """The server-set visitor cookie: first-party, HttpOnly, Lax, ``max_age`` (the site's, from the tenant's
    retention; 400 days at most); Secure on https."""
    return Cookie(
        key=VISITOR_COOKIE,
        value=token,
        max_age=max_age,
        httponly=True,
        secure=secure_cookies(),
        samesite="lax",
        path="/",
    )


def session_cookie_name() -> str:
    """The membership session's cookie: ``__Host-`` requires Secure (https); a plain http development server gets
    a plain name."""
    return "__Host-tm_session" if secure_cookies() else "tm_session"


def member_session_cookie(session_id: str) -> Cookie:
    """A member's session: HttpOnly, Lax, for the whole host, ending with the browser."""
    return Cookie(
        key=session_cookie_name(), value=session_id, httponly=True, secure=secure_cookies(), samesite="lax", path="/"
    )
