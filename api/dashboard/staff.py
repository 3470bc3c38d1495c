"""The owner's screens for the people and keys that act for the tenant: staff and invitations, API keys, the
audit log; and every staff member's own account page. Each change goes through the same service as the REST
API (tenants.staff, tenants.accounts) and is audited in its transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from api.cookies import secure_cookies
from api.dashboard.auth import StaffCaller, requires
from api.dashboard.login import problem_text
from api.dashboard.rendering import redirect, screen
from api.web.csrf import checked_form, checked_form_lists
from tenants.accounts.handover import HANDOVER_SECONDS, hand_over_secret, take_secret
from tenants.accounts.service import create_api_key, get_api_key, list_api_keys, revoke_api_key
from tenants.audit.service import AUDIT_PAGE_SIZE, list_actions
from tenants.errors import Invalid
from tenants.models import Scope, UserRole
from tenants.staff.service import (
    change_own_password,
    change_role,
    invite_staff,
    list_invitations,
    list_staff,
    remove_staff,
    resend_invitation,
    revoke_invitation,
)
from tenants.staff.sessions import end_staff_sessions, staff_session_count

__all__ = ["AccountController", "ApiKeysController", "AuditController", "StaffController"]

HANDOVER_COOKIE = "tm_key_handover"
ROLES = [role.value for role in UserRole]
SCOPES = [scope.value for scope in Scope]


class AccountController(Controller):
    """One's own account. Every role may change its own password and end its own sessions: that changes
    nothing of the tenant's, so the viewer rule (a viewer changes nothing) does not apply here."""

    path = "/app/account"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def account(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return await self._page(request, staff)

    async def _page(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], error: str = "", status: int = 200
    ) -> Template:
        sessions = await anyio.to_thread.run_sync(staff_session_count, staff.tenant_id, staff.user_id)
        return screen(
            request,
            staff,
            "dashboard/staff/account.html",
            section="account",
            title="Your account",
            status=status,
            sessions=sessions,
            error=error,
        )

    @post("/password", status_code=303)
    async def change_password(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]
    ) -> Response[Any]:
        form = await checked_form(request)
        new_password = form.get("new_password", "")
        if new_password != form.get("confirm_password", ""):
            return await self._page(request, staff, "the two new passwords differ", 422)
        try:
            ended = await anyio.to_thread.run_sync(
                lambda: change_own_password(
                    staff.tenant_id,
                    staff.user_id,
                    current_password=form.get("current_password", ""),
                    new_password=new_password,
                    keep=staff.session_id,
                )
            )
        except Invalid as refused:
            return await self._page(request, staff, problem_text(refused), 422)
        return redirect("/app/account", f"Password changed; {ended} other session(s) ended.")

    @post("/logout-everywhere", status_code=303)
    async def logout_everywhere(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]
    ) -> Response[Any]:
        def end_others() -> int:
            ended = end_staff_sessions(staff.tenant_id, staff.user_id, keep=staff.session_id)
            with staff.session() as session:
                staff.audit(session, "staff.logout_everywhere", f"staff:{staff.user_id}", ended=ended)
            return ended

        ended = await anyio.to_thread.run_sync(end_others)
        return redirect("/app/account", f"Logged out everywhere else: {ended} other session(s) ended.")


class StaffController(Controller):
    path = "/app/staff"
    include_in_schema = False
    guards = [requires(UserRole.OWNER)]

    @get("/")
    async def staff_list(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        def load() -> tuple[list[Any], list[Any]]:
            with staff.session() as session:
                users = list_staff(session)
                for user in users:
                    session.expunge(user)
                return users, list_invitations(session)

        users, invitations = await anyio.to_thread.run_sync(load)
        return screen(
            request,
            staff,
            "dashboard/staff/staff.html",
            section="staff",
            title="Staff",
            users=users,
            invitations=invitations,
            roles=ROLES,
        )

    @post("/invitations", status_code=303)
    async def invite(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Response[Any]:
        form = await checked_form(request)

        def run() -> str:
            with staff.session() as session:
                invitation = invite_staff(
                    session, email=form.get("email", ""), role=form.get("role", ""), invited_by=staff.email
                )
                staff.audit(
                    session,
                    "staff.invite",
                    f"invitation:{invitation.id}",
                    email=invitation.email,
                    role=invitation.role.value,
                )
                return invitation.email

        email = await anyio.to_thread.run_sync(run)
        return redirect("/app/staff", f"Invitation mailed to {email}.")

    @post("/invitations/{invitation_id:uuid}/resend", status_code=303)
    async def resend(self, staff: NamedDependency[StaffCaller], invitation_id: FromPath[UUID]) -> Response[Any]:
        def run() -> str:
            with staff.session() as session:
                invitation = resend_invitation(session, invitation_id)
                staff.audit(session, "staff.invitation_resend", f"invitation:{invitation.id}", email=invitation.email)
                return invitation.email

        email = await anyio.to_thread.run_sync(run)
        return redirect("/app/staff", f"Invitation mailed to {email} again; earlier links no longer work.")

    @post("/invitations/{invitation_id:uuid}/revoke", status_code=303)
    async def revoke(self, staff: NamedDependency[StaffCaller], invitation_id: FromPath[UUID]) -> Response[Any]:
        def run() -> str:
            with staff.session() as session:
                invitation = revoke_invitation(session, invitation_id)
                staff.audit(session, "staff.invitation_revoke", f"invitation:{invitation.id}", email=invitation.email)
                return invitation.email

        email = await anyio.to_thread.run_sync(run)
        return redirect("/app/staff", f"The invitation of {email} is withdrawn.")

    @post("/{user_id:uuid}/role", status_code=303)
    async def role(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], user_id: FromPath[UUID]
    ) -> Response[Any]:
        form = await checked_form(request)

        def run() -> str:
            with staff.session() as session:
                user, former = change_role(session, actor_id=staff.user_id, user_id=user_id, role=form.get("role", ""))
                staff.audit(
                    session,
                    "staff.role_change",
                    f"staff:{user.id}",
                    email=user.email,
                    before=former.value,
                    after=UserRole(user.role).value,
                )
                return f"{user.email} is now {UserRole(user.role).value}."

        return redirect("/app/staff", await anyio.to_thread.run_sync(run))

    @post("/{user_id:uuid}/remove", status_code=303)
    async def remove(self, staff: NamedDependency[StaffCaller], user_id: FromPath[UUID]) -> Response[Any]:
        def run() -> str:
            with staff.session() as session:
                user = remove_staff(session, actor_id=staff.user_id, user_id=user_id)
                staff.audit(
                    session, "staff.remove", f"staff:{user.id}", email=user.email, role=UserRole(user.role).value
                )
                return user.email

        email = await anyio.to_thread.run_sync(run)
        return redirect("/app/staff", f"{email} was removed.")


def _handover_cookie(handover_id: str) -> Cookie:
    return Cookie(
        key=HANDOVER_COOKIE,
        value=handover_id,
        max_age=HANDOVER_SECONDS,
        path=ApiKeysController.path,
        httponly=True,
        secure=secure_cookies(),
        samesite="strict",
    )


class ApiKeysController(Controller):
    path = "/app/api-keys"
    include_in_schema = False
    guards = [requires(UserRole.OWNER)]

    @get("/")
    async def keys(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return await self._page(request, staff)

    async def _page(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        *,
        error: str = "",
        status: int = 200,
        name: str = "",
        chosen: list[str] | None = None,
    ) -> Template:
        def load() -> list[Any]:
            with staff.session() as session:
                keys = list_api_keys(session)
                for key in keys:
                    session.expunge(key)
                return keys

        keys = await anyio.to_thread.run_sync(load)
        return screen(
            request,
            staff,
            "dashboard/staff/api_keys.html",
            section="api-keys",
            title="API keys",
            status=status,
            keys=keys,
            scopes=SCOPES,
            error=error,
            name=name,
            chosen=chosen if chosen is not None else SCOPES,
        )

    @post("/", status_code=303)
    async def create(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Response[Any]:
        form = await checked_form_lists(request)
        name = (form.get("name") or [""])[-1]
        scopes = form.get("scopes") or []

        def run() -> tuple[Any, str]:
            with staff.session() as session:
                created = create_api_key(session, name=name, scopes=scopes, created_by=staff.user_id)
                staff.audit(
                    session,
                    "api_key.create",
                    f"api_key:{created.key.id}",
                    name=created.key.name,
                    scopes=created.key.scopes,
                )
                session.flush()
                session.expunge(created.key)
                return created.key, created.secret

        try:
            key, secret = await anyio.to_thread.run_sync(run)
        except Invalid as refused:
            return await self._page(request, staff, error=problem_text(refused), status=422, name=name, chosen=scopes)
        handover_id = await anyio.to_thread.run_sync(hand_over_secret, staff.tenant_id, staff.user_id, key.id, secret)
        # Redirect, so a reload never mints a second key; the id that opens the secret rides in a cookie, not the URL.
        return redirect(f"{self.path}/created", cookies=[_handover_cookie(handover_id)])

    @get("/created")
    async def created(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        """The new key's secret, once: the handover is deleted as it is read, so a reload shows it is gone."""
        handover_id = request.cookies.get(HANDOVER_COOKIE) or ""

        def take() -> tuple[Any, str] | None:
            handed = take_secret(staff.tenant_id, staff.user_id, handover_id)
            if handed is None:
                return None
            with staff.session() as session:
                key = get_api_key(session, handed.key_id)
                session.expunge(key)
                return key, handed.secret

        taken = await anyio.to_thread.run_sync(take)
        response = screen(
            request,
            staff,
            "dashboard/staff/api_key_created.html",
            section="api-keys",
            title="New API key",
            status=200 if taken else 410,
            key=taken[0] if taken else None,
            secret=taken[1] if taken else None,
        )
        if handover_id:
            response.cookies.append(Cookie(key=HANDOVER_COOKIE, value="", max_age=0, path=self.path))
        return response

    @post("/{key_id:uuid}/revoke", status_code=303)
    async def revoke(self, staff: NamedDependency[StaffCaller], key_id: FromPath[UUID]) -> Response[Any]:
        def run() -> str:
            with staff.session() as session:
                key = revoke_api_key(session, key_id)
                staff.audit(session, "api_key.revoke", f"api_key:{key.id}", name=key.name)
                return key.name

        name = await anyio.to_thread.run_sync(run)
        return redirect("/app/api-keys", f"The key {name} is revoked.")


def _cursor(value: str | None) -> tuple[datetime, UUID] | None:
    """``<iso time>_<entry id>`` of the last entry of the previous page (a malformed one is a 400)."""
    if not value:
        return None
    at, _, entry_id = value.rpartition("_")
    try:
        return datetime.fromisoformat(at), UUID(entry_id)
    except ValueError:
        raise Invalid("the page cursor is malformed", {"before": "is not a cursor of this log"}) from None


class AuditController(Controller):
    path = "/app/audit"
    include_in_schema = False
    guards = [requires(UserRole.OWNER)]

    @get("/")
    async def audit(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        action: FromQuery[str] = "",
        before: FromQuery[str] = "",
    ) -> Template:
        cursor = _cursor(before)
        prefix = action.strip()[:100]

        def load() -> list[Any]:
            with staff.session() as session:
                entries = list_actions(session, before=cursor, action_prefix=prefix or None, limit=AUDIT_PAGE_SIZE + 1)
                for entry in entries:
                    session.expunge(entry)
                return entries

        entries = await anyio.to_thread.run_sync(load)
        more = len(entries) > AUDIT_PAGE_SIZE
        entries = entries[:AUDIT_PAGE_SIZE]
        next_cursor = f"{entries[-1].at.isoformat()}_{entries[-1].id}" if more else ""
        return screen(
            request,
            staff,
            "dashboard/staff/audit.html",
            section="audit",
            title="Audit log",
            entries=entries,
            action=prefix,
            next_cursor=next_cursor,
            first_page=cursor is None,
        )
