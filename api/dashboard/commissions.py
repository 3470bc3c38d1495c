"""Commissions and payouts: what partners earned (filtered by status and partner; approve or reject the ones
waiting), and the payouts that pay them (create the ones due, export the mass-payment CSV, mark one paid with
the payment's reference). Over the services the REST API uses (tenants.partners.commissions and .payouts)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter
from litestar.response import Redirect, Response, Template

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.manage_input import NO_REFUSAL, Refusal, parsed, shown_again
from api.dashboard.rendering import redirect, screen
from api.partners.payouts import CommissionReject, PayoutPaid
from api.web.csrf import checked_form
from api.web.downloads import csv_download
from tenants.models import Commission, CommissionStatus, Payout, PayoutStatus, UserRole
from tenants.partners import commissions, payouts
from tenants.partners import service as partners

__all__ = ["CommissionsController", "PayoutsController"]

Filter = Annotated[str | None, Parameter(required=False)]
LIST_LIMIT = commissions.MAX_PAGE


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None


class CommissionsController(Controller):
    path = "/app/commissions"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def list_commissions(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        status: Filter = None,
        partner_id: Filter = None,
    ) -> Template:
        wanted = CommissionStatus(status) if status in {s.value for s in CommissionStatus} else None
        partner = _uuid(partner_id)

        def read() -> tuple[list[Commission], dict[UUID, str]]:
            with staff.session() as session:
                rows = commissions.list_commissions(session, partner_id=partner, status=wanted, limit=LIST_LIMIT)
                return rows, partners.partner_emails(session, {row.partner_id for row in rows})

        rows, emails = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/partners/commissions.html",
            section="partners",
            title="Commissions",
            rows=rows,
            emails=emails,
            statuses=[s.value for s in CommissionStatus],
            status_filter=wanted.value if wanted else "",
            partner_filter=str(partner) if partner else "",
            limit=LIST_LIMIT,
            can_edit=staff.can(UserRole.EDITOR),
        )

    @post("/{commission_id:uuid}/{action:str}", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def decide(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        commission_id: FromPath[UUID],
        action: FromPath[str],
    ) -> Redirect:
        form = await checked_form(request)
        back = form.get("back", "")
        back = back if back.startswith("/app/commissions") else "/app/commissions"

        def decide() -> Commission:
            with staff.session() as session:
                if action == "approve":
                    row = commissions.approve_commission(session, commission_id)
                else:
                    reason = form.get("reason", "").strip() or None
                    data = parsed("rejection", {"reason": reason} if reason else {}, CommissionReject)
                    row = commissions.reject_commission(session, commission_id, data.reason)
                staff.audit(session, f"commission.{action}", f"commission:{commission_id}")
                return row

        if action not in ("approve", "reject"):
            return redirect(back, "Unknown action: nothing changed", kind="error")
        row = await anyio.to_thread.run_sync(decide)
        return redirect(back, f"Commission {row.status}")


class PayoutsController(Controller):
    path = "/app/payouts"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def list_payouts(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        def read() -> tuple[list[Payout], dict[UUID, str]]:
            with staff.session() as session:
                rows = payouts.list_payouts(session)
                return rows, partners.partner_emails(session, {row.partner_id for row in rows})

        rows, emails = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/partners/payouts.html",
            section="partners",
            title="Payouts",
            rows=rows,
            emails=emails,
            can_pay=staff.can(UserRole.ADMIN),
        )

    @post("/", guards=[requires(UserRole.ADMIN)], status_code=303)
    async def create(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        await checked_form(request)

        def create() -> int:
            with staff.session() as session:
                made = payouts.create_payouts(session)
                for payout in made:
                    staff.audit(session, "payout.create", f"payout:{payout.id}", amount=payout.amount)
                return len(made)

        made = await anyio.to_thread.run_sync(create)
        message = f"{made} payout(s) created" if made else "No partner's approved balance reaches the minimum yet"
        return redirect("/app/payouts", message)

    async def _payout_page(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        payout_id: UUID,
        refusal: Refusal = NO_REFUSAL,
        reference: str = "",
    ) -> Template:
        def read() -> tuple[Payout, list[Commission], str]:
            with staff.session() as session:
                payout = payouts.get_payout(session, payout_id)
                lines = commissions.list_commissions(session, payout_id=payout_id, limit=commissions.MAX_PAGE)
                return payout, lines, partners.partner_emails(session, {payout.partner_id}).get(payout.partner_id, "")

        payout, lines, email = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/partners/payout.html",
            section="partners",
            title="Payout",
            status=refusal.status if refusal.message else 200,
            payout=payout,
            lines=lines,
            email=email,
            paid=payout.status == PayoutStatus.PAID,
            can_pay=staff.can(UserRole.ADMIN),
            refusal=refusal,
            reference=reference,
        )

    @get("/{payout_id:uuid}")
    async def payout_page(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], payout_id: FromPath[UUID]
    ) -> Template:
        return await self._payout_page(request, staff, payout_id)

    @get("/{payout_id:uuid}/export.csv", sync_to_thread=True)
    def export(self, staff: NamedDependency[StaffCaller], payout_id: FromPath[UUID]) -> Response[str]:
        with staff.session() as session:
            body = payouts.payout_csv(session, payout_id)
        return csv_download(body, f"payout-{payout_id}.csv")

    @post("/{payout_id:uuid}/paid", guards=[requires(UserRole.ADMIN)], status_code=303)
    async def mark_paid(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], payout_id: FromPath[UUID]
    ) -> Redirect:
        reference = (await checked_form(request)).get("external_reference", "").strip()

        def mark() -> bool:
            data = parsed("payment", {"external_reference": reference}, PayoutPaid)
            with staff.session() as session:
                marked = payouts.mark_payout_paid(session, payout_id, data.external_reference)
                if marked.changed:
                    staff.audit(session, "payout.paid", f"payout:{payout_id}", reference=data.external_reference)
                return marked.changed

        async with shown_again(
            lambda refusal: self._payout_page(request, staff, payout_id, refusal, reference),
            conflict_field="external_reference",
        ):
            changed = await anyio.to_thread.run_sync(mark)
        return redirect(f"/app/payouts/{payout_id}", "Payout marked paid" if changed else "It was marked paid already")
