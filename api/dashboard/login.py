"""Logging in and out of the dashboard."""

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
from tenants.errors import Unauthorized
from tenants.settings import get_settings
from tenants.staff.service import authenticate_staff
from tenants.staff.sessions import create_staff_session, destroy_staff_session

__all__ = ["LoginController", "safe_dashboard_next"]


def safe_dashboard_next(value: str | None) -> str:
    """Where to go after logging in: a dashboard path of ours, never another site."""
    if value and value.startswith("/app") and not value.startswith("//") and "\\" not in value:
        return value
    return "/app"


def staff_cookie(session_id: str) -> Cookie:
    return Cookie(
        key=staff_cookie_name(),
        value=session_id,
        httponly=True,
        secure=secure_cookies(),
        samesite="lax",
        path="/",
        max_age=get_settings().session_absolute_hours * 3600,
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
            member = await anyio.to_thread.run_sync(authenticate_staff, workspace, email, form.get("password", ""))
        except Unauthorized as refused:
            return page(
                request,
                "dashboard/login.html",
                status=401,
                next=safe_dashboard_next(form.get("next")),
                workspace=workspace,
                email=email,
                error=refused.message,
            )
        # A fresh session id on every login: an id planted before login (session fixation) never becomes valid.
        old = request.cookies.get(staff_cookie_name())
        if old:
            await anyio.to_thread.run_sync(destroy_staff_session, old)
        session = await anyio.to_thread.run_sync(create_staff_session, member.tenant_id, member.user_id)
        return Redirect(
            safe_dashboard_next(form.get("next")),
            status_code=303,
            cookies=[staff_cookie(session.session_id)],
            headers={"Cache-Control": "no-store"},
        )

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        session_id = request.cookies.get(staff_cookie_name())
        if session_id:
            await anyio.to_thread.run_sync(destroy_staff_session, session_id)
        return Redirect(
            "/app/login",
            status_code=303,
            cookies=[Cookie(key=staff_cookie_name(), value="", max_age=0, path="/", secure=secure_cookies())],
        )
