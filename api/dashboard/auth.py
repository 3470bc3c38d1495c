"""Who is using the dashboard: the staff session behind the cookie, role guards, and CSRF on every change.

Guards run before a handler's dependencies, so :func:`staff_of` resolves the session once per request and
keeps it on the connection; the ``staff`` dependency and every guard read the same :class:`StaffCaller`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from uuid import UUID

import anyio.to_thread
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from sqlmodel import Session

from api.cookies import secure_cookies
from api.web.csrf import check_request, checked_form_lists
from tenants.audit.service import record_action
from tenants.errors import Forbidden
from tenants.isolation import tenant_session
from tenants.models import UserRole
from tenants.staff.service import staff_member
from tenants.staff.sessions import read_staff_session

__all__ = ["LoginRequired", "StaffCaller", "csrf_guard", "provide_staff", "requires", "staff_cookie_name", "staff_of"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def staff_cookie_name() -> str:
    """``__Host-`` requires Secure (https); a plain http development server gets a plain name."""
    return "__Host-tm_staff" if secure_cookies() else "tm_staff"


@dataclass(frozen=True)
class StaffCaller:
    """The signed-in staff member of a dashboard request."""

    tenant_id: UUID
    user_id: UUID
    email: str
    role: UserRole
    session_id: str
    """The staff cookie of this request's session (tenant and session id)."""

    def can(self, role: UserRole) -> bool:
        return self.role.includes(role)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A database session scoped to the staff member's tenant."""
        with tenant_session(self.tenant_id) as session:
            yield session

    def audit(self, session: Session, action: str, subject: str | None = None, **detail: Any) -> None:
        """Record, in ``session``'s transaction, that this staff member did ``action`` (see tenants.audit)."""
        record_action(
            session, actor_id=self.user_id, actor_email=self.email, action=action, subject=subject, detail=detail
        )


class LoginRequired(Exception):
    """No live staff session: the dashboard answers with the way to its login page (and back)."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.location = f"/app/login?next={quote(back_to, safe='/')}"


def _resolve(cookie: str | None) -> StaffCaller | None:
    session = read_staff_session(cookie)
    if session is None:
        return None
    member = staff_member(session.tenant_id, session.user_id)
    if member is None:
        return None
    return StaffCaller(member.tenant_id, member.user_id, member.email, member.role, session.cookie)


async def staff_of(connection: ASGIConnection[Any, Any, Any, Any]) -> StaffCaller:
    """The request's staff member (resolved once per request), or :class:`LoginRequired`."""
    known = connection.scope.get("state", {}).get("staff")
    if isinstance(known, StaffCaller):
        return known
    caller = await anyio.to_thread.run_sync(_resolve, connection.cookies.get(staff_cookie_name()))
    if caller is None:
        back_to = connection.url.path + (f"?{connection.url.query}" if connection.url.query else "")
        raise LoginRequired(back_to if connection.scope.get("method") == "GET" else "/app")
    connection.state.staff = caller
    return caller


def requires(role: UserRole) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    """A guard: the signed-in staff member holds ``role`` (or a stronger one)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        caller = await staff_of(connection)
        if not caller.can(role):
            raise Forbidden(f"a {caller.role.value} cannot do this; it takes the {role.value} role")

    return guard


async def csrf_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Every state-changing dashboard request comes from our own page with the CSRF token."""
    if not isinstance(connection, Request) or connection.method in SAFE_METHODS:
        return
    content_type = connection.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        await checked_form_lists(connection)  # the parsed form is cached on the request for the handler
    else:
        check_request(connection)


async def _provide_staff(request: Request[Any, Any, Any]) -> StaffCaller:
    return await staff_of(request)


provide_staff = Provide(_provide_staff)
"""Dependency ``staff``: the signed-in :class:`StaffCaller`."""
