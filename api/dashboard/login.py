"""Getting into the dashboard without a session: log in and out, reset a forgotten password by mail, accept an
invitation. Every way in ends with a fresh session id (a planted id never becomes valid)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from api.cookies import secure_cookies
from api.dashboard.auth import staff_cookie_name
from api.web.csrf import checked_form
from api.web.templates import page
from tenants.errors import DomainError, Invalid, RateLimited, Unauthorized
from tenants.settings import get_settings
from tenants.staff.service import (
    StaffMember,
    accept_invitation,
    authenticate_staff,
    check_reset_link,
    pending_invitation,
    request_password_reset,
    reset_password,
)
from tenants.staff.sessions import create_staff_session, destroy_staff_session
from tenants.tracking.origins import client_ip

__all__ = ["LoginController", "client_address", "problem_text", "safe_dashboard_next", "staff_cookie"]


def safe_dashboard_next(value: str | None) -> str:
    """Where to go after logging in: a dashboard path of ours, never another site."""
    if value and value.startswith("/app") and not value.startswith("//") and "\\" not in value:
        return value
    return "/app"


def client_address(request: Request[Any, Any, Any]) -> str | None:
    """The caller's address, believing X-Forwarded-For only from a configured proxy (as collect does)."""
    return client_ip(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        get_settings().trusted_proxies,
    )


def problem_text(error: DomainError) -> str:
    """One line for a form: the per-field messages, or the error's own."""
    if isinstance(error, Invalid) and error.errors:
        return "; ".join(f"{field.replace('_', ' ')} {text}" for field, text in error.errors.items())
    return error.message


def staff_cookie(cookie: str) -> Cookie:
    return Cookie(
        key=staff_cookie_name(),
        value=cookie,
        httponly=True,
        secure=secure_cookies(),
        samesite="lax",
        path="/",
        max_age=get_settings().staff_session_absolute_hours * 3600,
    )


async def logged_in(request: Request[Any, Any, Any], member: StaffMember, location: str) -> Redirect:
    """Start a fresh session for ``member`` (the id the browser offered dies) and go to ``location``."""
    old = request.cookies.get(staff_cookie_name())
    if old:
        await anyio.to_thread.run_sync(destroy_staff_session, old)
    session = await anyio.to_thread.run_sync(create_staff_session, member.tenant_id, member.user_id)
    return Redirect(
        location, status_code=303, cookies=[staff_cookie(session.cookie)], headers={"Cache-Control": "no-store"}
    )


class LoginController(Controller):
    path = "/app"
    include_in_schema = False

    @get("/login")
    async def login_form(self, request: Request[Any, Any, Any], next: FromQuery[str | None] = None) -> Template:
        return page(request, "dashboard/login.html", next=safe_dashboard_next(next), workspace="", email="", error="")

    @post("/login", status_code=303)
    async def login(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await checked_form(request)
        workspace, email = form.get("workspace", ""), form.get("email", "")
        try:
            member = await anyio.to_thread.run_sync(
                authenticate_staff, workspace, email, form.get("password", ""), client_address(request)
            )
        except Unauthorized as refused:
            error, status, headers = refused.message, 401, None
        except RateLimited as limited:
            error = f"{limited.message} (in {limited.retry_after} s)"
            status, headers = 429, {"Retry-After": str(limited.retry_after)}
        else:
            return await logged_in(request, member, safe_dashboard_next(form.get("next")))
        return page(
            request,
            "dashboard/login.html",
            status=status,
            headers=headers,
            next=safe_dashboard_next(form.get("next")),
            workspace=workspace,
            email=email,
            error=error,
        )

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        cookie = request.cookies.get(staff_cookie_name())
        if cookie:
            await anyio.to_thread.run_sync(destroy_staff_session, cookie)
        return Redirect(
            "/app/login",
            status_code=303,
            cookies=[Cookie(key=staff_cookie_name(), value="", max_age=0, path="/", secure=secure_cookies())],
        )

    @get("/password-reset")
    async def reset_form(self, request: Request[Any, Any, Any]) -> Template:
        return page(request, "dashboard/staff/password_reset.html", sent=False, workspace="", email="", error="")

    @post("/password-reset", status_code=200)
    async def reset_request(self, request: Request[Any, Any, Any]) -> Template:
        form = await checked_form(request)
        workspace, email = form.get("workspace", ""), form.get("email", "")
        try:
            await anyio.to_thread.run_sync(request_password_reset, workspace, email, client_address(request))
        except (Invalid, RateLimited) as refused:
            retry = {"Retry-After": str(refused.retry_after)} if isinstance(refused, RateLimited) else None
            return page(
                request,
                "dashboard/staff/password_reset.html",
                status=refused.status,
                headers=retry,
                sent=False,
                workspace=workspace,
                email=email,
                error=problem_text(refused),
            )
        # The same answer whether or not the address is staff here: the page tells nobody who has an account.
        return page(
            request, "dashboard/staff/password_reset.html", sent=True, workspace=workspace, email=email, error=""
        )

    @get("/password-reset/confirm")
    async def reset_confirm_form(
        self, request: Request[Any, Any, Any], workspace: FromQuery[str] = "", token: FromQuery[str] = ""
    ) -> Template:
        return await self._reset_form(request, workspace, token)

    @post("/password-reset/confirm", status_code=303)
    async def reset_confirm(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await checked_form(request)
        workspace, token = form.get("workspace", ""), form.get("token", "")
        password = form.get("new_password", "")
        if password != form.get("confirm_password", ""):
            return await self._reset_form(request, workspace, token, "the two passwords differ", status=422)
        try:
            member = await anyio.to_thread.run_sync(reset_password, workspace, token, password)
        except Invalid as refused:
            if "token" in refused.errors:
                return page(request, "dashboard/staff/link_refused.html", status=400, error=refused.message)
            return await self._reset_form(request, workspace, token, problem_text(refused), status=422)
        return await logged_in(request, member, "/app")

    async def _reset_form(
        self, request: Request[Any, Any, Any], workspace: str, token: str, error: str = "", *, status: int = 200
    ) -> Template:
        """The set-a-new-password form of a live reset link (again with ``error`` after a refusal)."""
        try:
            email = await anyio.to_thread.run_sync(check_reset_link, workspace, token)
        except Invalid as refused:
            return page(request, "dashboard/staff/link_refused.html", status=400, error=refused.message)
        return page(
            request,
            "dashboard/staff/password_reset_confirm.html",
            status=status,
            workspace=workspace,
            token=token,
            email=email,
            error=error,
        )

    @get("/invitation")
    async def invitation_form(
        self, request: Request[Any, Any, Any], workspace: FromQuery[str] = "", token: FromQuery[str] = ""
    ) -> Template:
        try:
            invitation = await anyio.to_thread.run_sync(pending_invitation, workspace, token)
        except Invalid as refused:
            return page(request, "dashboard/staff/link_refused.html", status=400, error=refused.message)
        return page(
            request,
            "dashboard/staff/invitation.html",
            workspace=workspace,
            token=token,
            invitation=invitation,
            error="",
        )

    @post("/invitation", status_code=303)
    async def invitation_accept(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await checked_form(request)
        workspace, token, password = form.get("workspace", ""), form.get("token", ""), form.get("password", "")
        try:
            if password != form.get("confirm_password", ""):
                raise Invalid("the passwords differ", {"confirm_password": "differs from the password"})
            member = await anyio.to_thread.run_sync(accept_invitation, workspace, token, password)
        except Invalid as refused:
            if "token" in refused.errors:
                return page(request, "dashboard/staff/link_refused.html", status=400, error=refused.message)
            invitation = await anyio.to_thread.run_sync(pending_invitation, workspace, token)
            return page(
                request,
                "dashboard/staff/invitation.html",
                status=422,
                workspace=workspace,
                token=token,
                invitation=invitation,
                error=problem_text(refused),
            )
        return await logged_in(request, member, "/app")
