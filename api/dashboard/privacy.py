"""The Privacy screen: the retention policy and when data was last expired, members' erasure requests to confirm
or decline, and every erasure with its report."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.rendering import redirect, screen
from api.web.csrf import checked_form
from tenants.errors import Invalid
from tenants.models import ErasureStatus, UserRole
from tenants.privacy import erase, retention
from tenants.tracking.visitors import visitor_cookie_max_age

__all__ = ["PrivacyController"]


def _months(value: str | None, field: str, *, optional: bool) -> int | None:
    text = (value or "").strip()
    if not text and optional:
        return None
    try:
        return int(text)
    except ValueError:
        raise Invalid("the retention policy is invalid", {field: "must be a whole number of months"}) from None


class PrivacyController(Controller):
    path = "/app/privacy"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/", sync_to_thread=True)
    def privacy(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        with staff.session() as session:
            policy = retention.get_policy(session)
            awaiting = erase.list_erasures(session, status=ErasureStatus.AWAITING_CONFIRMATION, limit=200)
            recent = erase.list_erasures(session, limit=50)
        return screen(
            request,
            staff,
            "dashboard/privacy/privacy.html",
            section="privacy",
            title="Privacy",
            policy=policy,
            cookie_days=visitor_cookie_max_age(policy.anonymous_visitor_months) // 86400,
            awaiting=awaiting,
            recent=recent,
            can_change=staff.can(UserRole.ADMIN),
        )

    @post("/retention", guards=[requires(UserRole.ADMIN)])
    async def set_retention(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        form = await checked_form(request)

        def save() -> None:
            anonymous = _months(form.get("anonymous_visitor_months"), "anonymous_visitor_months", optional=False)
            identified = _months(form.get("identified_visit_months"), "identified_visit_months", optional=True)
            with staff.session() as session:
                retention.set_policy(
                    session, anonymous_visitor_months=anonymous or 0, identified_visit_months=identified
                )
                staff.audit(
                    session,
                    "privacy.retention",
                    anonymous_visitor_months=anonymous,
                    identified_visit_months=identified,
                )

        await anyio.to_thread.run_sync(save)
        return redirect("/app/privacy", "Retention policy saved")

    @get("/erasures/{erasure_id:uuid}", sync_to_thread=True)
    def erasure(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], erasure_id: FromPath[UUID]
    ) -> Template:
        with staff.session() as session:
            found = erase.get_erasure(session, erasure_id)
        return screen(
            request,
            staff,
            "dashboard/privacy/erasure.html",
            section="privacy",
            title="Erasure",
            erasure=found,
            can_change=staff.can(UserRole.ADMIN),
        )

    @post("/erasures/{erasure_id:uuid}/confirm", guards=[requires(UserRole.ADMIN)])
    async def confirm(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], erasure_id: FromPath[UUID]
    ) -> Redirect:
        await checked_form(request)

        def confirm_it() -> None:
            with staff.session() as session:
                confirmed = erase.confirm_erasure(session, erasure_id, confirmed_by=f"staff:{staff.user_id}")
                staff.audit(session, "erasure.confirm", f"contact:{confirmed.contact_id}", erasure=str(erasure_id))

        await anyio.to_thread.run_sync(confirm_it)
        return redirect(f"/app/privacy/erasures/{erasure_id}", "Erasure confirmed: the person is being erased")

    @post("/erasures/{erasure_id:uuid}/decline", guards=[requires(UserRole.ADMIN)])
    async def decline(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], erasure_id: FromPath[UUID]
    ) -> Redirect:
        await checked_form(request)

        def decline_it() -> None:
            with staff.session() as session:
                declined = erase.decline_erasure(session, erasure_id, declined_by=f"staff:{staff.user_id}")
                staff.audit(session, "erasure.decline", f"contact:{declined.contact_id}", erasure=str(erasure_id))

        await anyio.to_thread.run_sync(decline_it)
        return redirect(f"/app/privacy/erasures/{erasure_id}", "Erasure request declined")
