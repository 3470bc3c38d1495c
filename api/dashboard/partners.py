"""Partners: the tenant's partner programs (terms and earning products), its partners (approve, reject,
suspend) and each partner's page (codes, referral clicks, referred contacts), over the services the REST API
uses (tenants.partners.service), with the API's own request structs for what is typed."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter
from litestar.response import Redirect, Template

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.manage_input import NO_REFUSAL, Refusal, changed_fields, parsed, shown_again
from api.dashboard.rendering import redirect, screen
from api.partners.schemas import FlatRate, PartnerCreate, PercentRate, ProductSet, ProgramCreate
from api.web.csrf import checked_form
from tenants.contacts.service import emails_of, get_contact
from tenants.errors import Invalid, NotFound
from tenants.models import CodeKind, Partner, PartnerStatus, Program, UserRole
from tenants.partners import activity
from tenants.partners import service as partners
from tenants.partners.report import PartnersReport, partners_report, report_range

__all__ = ["PartnerProgramsController", "PartnersController"]

PROGRAM_TERMS = (
    "name",
    "landing_url",
    "currency",
    "referrer_rule",
    "cookie_window_days",
    "tiers",
    "hold_days",
    "minimum_payout",
    "recurring_months",
    "self_referral",
    "shared_referral_fields",
    "auto_approve",
)
NEW_PROGRAM: dict[str, Any] = {
    "name": "",
    "landing_url": "",
    "currency": "EUR",
    "referrer_rule": "first",
    "cookie_window_days": 30,
    "tiers": 1,
    "hold_days": 30,
    "minimum_payout": 0,
    "recurring_months": None,
    "self_referral": "refuse",
    "shared_referral_fields": "masked",
    "auto_approve": False,
}
"""A new program's form before anything is typed: the REST API's defaults."""
STATUS_ACTIONS = {
    "approve": PartnerStatus.APPROVED,
    "reject": PartnerStatus.REJECTED,
    "suspend": PartnerStatus.SUSPENDED,
}
NEXT_STATUSES = {
    status: [action for action, target in STATUS_ACTIONS.items() if status in partners.TRANSITIONS[target]]
    for status in PartnerStatus
}
"""Which actions a partner of each status offers (the service refuses the others with 409)."""


def _program_values(form: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {name: form.get(name, "").strip() for name in PROGRAM_TERMS if name != "auto_approve"}
    values["currency"] = values["currency"].upper()
    values["recurring_months"] = values["recurring_months"] or None  # blank: for the subscription's life
    values["auto_approve"] = form.get("auto_approve") == "on"
    return values


def _terms_of(program: Program) -> dict[str, Any]:
    return {name: getattr(program, name) for name in PROGRAM_TERMS}


def _product_values(form: dict[str, str]) -> dict[str, Any]:
    def rate(level: str) -> dict[str, Any]:
        return {"kind": form.get(f"{level}-kind", "percent"), "value": form.get(f"{level}-value", "").strip()}

    level2 = rate("level2")
    return {"product": form.get("product", "").strip(), "level1": rate("level1"), "level2": level2}


def _product_struct_values(values: dict[str, Any]) -> dict[str, Any]:
    """A level-2 rate left blank is no level-2 rate."""
    return {**values, "level2": values["level2"] if values["level2"]["value"] != "" else None}


def _rate(rate: PercentRate | FlatRate) -> partners.CommissionRate:
    return partners.CommissionRate("percent" if isinstance(rate, PercentRate) else "flat", rate.value)


def _at_field(refusal: Refusal, name: str) -> Refusal:
    """A conflict (a taken code, a person who is a partner already: 409) names no field; its reason belongs by
    the value typed."""
    return refusal if refusal.errors else Refusal(refusal.message, refusal.status, {name: refusal.message})


class PartnerProgramsController(Controller):
    path = "/app/partner-programs"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def list_programs(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        def read() -> tuple[list[Program], dict[UUID, int]]:
            with staff.session() as session:
                counts: dict[UUID, int] = {}
                for partner in partners.list_partners(session):
                    counts[partner.program_id] = counts.get(partner.program_id, 0) + 1
                return partners.list_programs(session), counts

        programs, counts = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/partners/programs.html",
            section="partners",
            title="Partner programs",
            programs=programs,
            partner_counts=counts,
            can_edit=staff.can(UserRole.EDITOR),
        )

    async def _editor(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        program_id: UUID | None,
        values: dict[str, Any] | None = None,
        refusal: Refusal = NO_REFUSAL,
        product_values: dict[str, Any] | None = None,
        product_refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        """The program's terms and products (a new program's terms when ``program_id`` is None): first with the
        saved values, or again after a refusal with what was typed and why next to its field."""

        def read() -> tuple[Program | None, list[Any], str]:
            with staff.session() as session:
                if program_id is None:
                    return None, [], partners.portal_url(session, "login")
                program = partners.get_program(session, program_id)
                return program, partners.list_products(session, program_id), partners.portal_url(session, "login")

        program, products, portal = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/partners/program.html",
            section="partners",
            title=program.name if program else "New partner program",
            status=max(refusal.status, product_refusal.status),
            program=program,
            values=values or (_terms_of(program) if program else NEW_PROGRAM),
            refusal=refusal,
            products=products,
            product_values=product_values
            or {"product": "", "level1": {"kind": "percent", "value": ""}, "level2": {"kind": "percent", "value": ""}},
            product_refusal=product_refusal,
            portal_url=portal,
            can_edit=staff.can(UserRole.EDITOR),
        )

    @get("/new", guards=[requires(UserRole.EDITOR)])
    async def new_program(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return await self._editor(request, staff, None)

    @post("/", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_program(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        values = _program_values(await checked_form(request))

        def create() -> UUID:
            data = parsed("program", values, ProgramCreate)
            with staff.session() as session:
                program = partners.create_program(session, data.settings())
                staff.audit(session, "program.create", f"program:{program.id}", fields=list(PROGRAM_TERMS))
                return program.id

        async with shown_again(lambda refusal: self._editor(request, staff, None, values, refusal)):
            program_id = await anyio.to_thread.run_sync(create)
        return redirect(f"/app/partner-programs/{program_id}", "Program created: add the products that earn in it")

    @get("/{program_id:uuid}")
    async def show_program(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], program_id: FromPath[UUID]
    ) -> Template:
        return await self._editor(request, staff, program_id)

    @post("/{program_id:uuid}", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def update_program(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], program_id: FromPath[UUID]
    ) -> Redirect:
        values = _program_values(await checked_form(request))

        def update() -> None:
            # The form carries every term, so it is read whole; a blank recurring period clears it.
            data = parsed("program", values, ProgramCreate)
            settings = dataclasses.replace(data.settings(), clear_recurring=data.recurring_months is None)
            with staff.session() as session:
                before = _terms_of(partners.get_program(session, program_id))
                program = partners.update_program(session, program_id, settings)
                changed = changed_fields(before, _terms_of(program))
                if changed:
                    staff.audit(session, "program.update", f"program:{program.id}", fields=changed)

        async with shown_again(lambda refusal: self._editor(request, staff, program_id, values, refusal)):
            await anyio.to_thread.run_sync(update)
        return redirect(f"/app/partner-programs/{program_id}", "Program saved")

    @post("/{program_id:uuid}/products", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def set_product(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], program_id: FromPath[UUID]
    ) -> Redirect:
        values = _product_values(await checked_form(request))

        def save() -> None:
            data = parsed("product", _product_struct_values(values), ProductSet)
            level1 = _rate(data.level1)
            level2 = _rate(data.level2) if data.level2 else None
            with staff.session() as session:
                partners.set_product(session, program_id, data.product, level1, level2)
                staff.audit(session, "program.product.set", f"program:{program_id}", product=data.product)

        async with shown_again(
            lambda refusal: self._editor(request, staff, program_id, product_values=values, product_refusal=refusal)
        ):
            await anyio.to_thread.run_sync(save)
        return redirect(f"/app/partner-programs/{program_id}", f"Product {values['product']} saved")

    @post("/{program_id:uuid}/products/delete", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def delete_product(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], program_id: FromPath[UUID]
    ) -> Redirect:
        product = (await checked_form(request)).get("product", "")

        def delete() -> None:
            with staff.session() as session:
                partners.delete_product(session, program_id, product)
                staff.audit(session, "program.product.delete", f"program:{program_id}", product=product)

        await anyio.to_thread.run_sync(delete)
        return redirect(f"/app/partner-programs/{program_id}", f"Product {product} removed: it earns no more")


class PartnersController(Controller):
    path = "/app/partners"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def list_partners(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        status: Annotated[str | None, Parameter(required=False)] = None,
        program_id: Annotated[str | None, Parameter(required=False)] = None,
    ) -> Template:
        return await self._list(request, staff, status, program_id)

    async def _list(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        status: str | None,
        program_id: str | None,
        new_partner: dict[str, str] | None = None,
        refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        # A filter typed into the address that names nothing is ignored, as an empty select sends it.
        wanted = PartnerStatus(status) if status in {s.value for s in PartnerStatus} else None
        try:
            program = UUID(program_id) if program_id else None
        except ValueError:
            program = None

        def read() -> tuple[list[tuple[Partner, str, str]], list[Program]]:
            with staff.session() as session:
                programs = partners.list_programs(session)
                names = {p.id: p.name for p in programs}
                found = partners.list_partners(session, program_id=program, status=wanted)
                emails = emails_of(session, (p.contact_id for p in found))
                rows = [(p, emails.get(p.contact_id, ""), names.get(p.program_id, "")) for p in found]
                return rows, programs

        rows, programs = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/partners/partners.html",
            section="partners",
            title="Partners",
            status=refusal.status,
            rows=rows,
            programs=programs,
            status_filter=wanted.value if wanted else "",
            program_id=str(program) if program else "",
            statuses=[s.value for s in PartnerStatus],
            next_statuses=NEXT_STATUSES,
            new_partner=new_partner or {"program_id": "", "email": "", "status": "applied"},
            refusal=refusal,
            can_edit=staff.can(UserRole.EDITOR),
        )

    @post("/", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def add_partner(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        """A partner added by the tenant (as ``POST /api/v1/partners``): it chooses its portal password through
        "Forgot your password?"."""
        form = await checked_form(request)
        values = {
            "program_id": form.get("program_id", ""),
            "email": form.get("email", "").strip(),
            "status": form.get("status", "applied"),
        }

        def add() -> UUID:
            data = parsed("partner", values, PartnerCreate)
            with staff.session() as session:
                partner = partners.create_partner(
                    session, program_id=data.program_id, email=data.email, status=PartnerStatus(data.status)
                )
                staff.audit(session, "partner.create", f"partner:{partner.id}", status=str(partner.status))
                return partner.id

        async with shown_again(
            lambda refusal: self._list(request, staff, None, None, values, _at_field(refusal, "email"))
        ):
            partner_id = await anyio.to_thread.run_sync(add)
        return redirect(f"/app/partners/{partner_id}", "Partner added")

    @get("/report")
    async def show_report(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        start: Annotated[str | None, Parameter(required=False)] = None,
        end: Annotated[str | None, Parameter(required=False)] = None,
    ) -> Template:
        """Clicks, leads, customers, revenue and commission per partner, per SubID and per day, from the rollups."""
        first, last = report_range(start, end, datetime.now(UTC).date())

        def read() -> PartnersReport:
            with staff.session() as session:
                return partners_report(session, start=first, end=last)

        return screen(
            request,
            staff,
            "dashboard/partners/report.html",
            section="partners",
            title="Partners report",
            report=await anyio.to_thread.run_sync(read),
        )

    async def _partner_page(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        partner_id: UUID,
        code_values: dict[str, str] | None = None,
        code_refusal: Refusal = NO_REFUSAL,
        payout_value: str | None = None,
        payout_refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        def read() -> dict[str, Any]:
            with staff.session() as session:
                partner = partners.get_partner(session, partner_id)
                program = partners.get_program(session, partner.program_id)
                codes = partners.list_codes(session, partner_id=partner_id)
                parent_email = None
                if partner.parent_partner_id:
                    parent = partners.get_partner(session, partner.parent_partner_id)
                    parent_email = get_contact(session, parent.contact_id).email
                return {
                    "partner": partner,
                    "program": program,
                    "email": get_contact(session, partner.contact_id).email,
                    "parent_email": parent_email,
                    "codes": [
                        (c, partners.referral_link(program, c.code) if c.kind == CodeKind.LINK else None) for c in codes
                    ],
                    "clicks": activity.recent_clicks(session, partner_id),
                    "referred": activity.referred_contacts(session, partner_id),
                }

        found = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/partners/partner.html",
            section="partners",
            title=found["email"],
            status=max(code_refusal.status, payout_refusal.status),
            **found,
            actions=NEXT_STATUSES[PartnerStatus(found["partner"].status)],
            code_values=code_values or {"code": "", "kind": "promo"},
            code_refusal=code_refusal,
            payout_value=found["partner"].payout_email or "" if payout_value is None else payout_value,
            payout_refusal=payout_refusal,
            can_edit=staff.can(UserRole.EDITOR),
        )

    @get("/{partner_id:uuid}")
    async def show_partner(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], partner_id: FromPath[UUID]
    ) -> Template:
        return await self._partner_page(request, staff, partner_id)

    @post("/{partner_id:uuid}/status", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def change_status(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], partner_id: FromPath[UUID]
    ) -> Redirect:
        """Approve, reject or suspend (the service answers 409 for a move the partner's status does not allow)."""
        form = await checked_form(request)
        action = form.get("action", "")
        if action not in STATUS_ACTIONS:
            raise Invalid(f"{action} is not something a partner can be", {"action": "approve, reject or suspend"})
        target = STATUS_ACTIONS[action]

        def change() -> None:
            with staff.session() as session:
                before = partners.get_partner(session, partner_id).status
                partner = partners.set_partner_status(session, partner_id, target)
                if partner.status != before:
                    staff.audit(session, f"partner.{action}", f"partner:{partner_id}", status=str(partner.status))

        await anyio.to_thread.run_sync(change)
        back = form.get("back", "")
        location = back if back.startswith("/app/partners") else f"/app/partners/{partner_id}"
        return redirect(location, f"Partner {target.value}")

    @post("/{partner_id:uuid}/payout-email", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def set_payout_email(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], partner_id: FromPath[UUID]
    ) -> Redirect:
        """Where the partner's payouts go (the partner sets it in the portal's settings too): the same service."""
        address = (await checked_form(request)).get("payout_email", "")

        def change() -> None:
            with staff.session() as session:
                before = partners.get_partner(session, partner_id).payout_email
                partner = partners.update_partner(session, partner_id, payout_email=address)
                if partner.payout_email != before:
                    staff.audit(session, "partner.update", f"partner:{partner_id}", fields=["payout_email"])

        async with shown_again(
            lambda refusal: self._partner_page(
                request, staff, partner_id, payout_value=address, payout_refusal=_at_field(refusal, "payout_email")
            )
        ):
            await anyio.to_thread.run_sync(change)
        return redirect(f"/app/partners/{partner_id}", "Payout email saved")

    @post("/{partner_id:uuid}/codes", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_code(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], partner_id: FromPath[UUID]
    ) -> Redirect:
        form = await checked_form(request)
        values = {"code": form.get("code", ""), "kind": form.get("kind", "promo")}

        def create() -> str:
            if values["kind"] not in {k.value for k in CodeKind}:
                raise Invalid("the code is invalid", {"kind": "must be link or promo"})
            with staff.session() as session:
                # The service checks the charset, so the dashboard and the API refuse the same codes.
                code = partners.create_code(
                    session, partner_id=partner_id, code=values["code"], kind=CodeKind(values["kind"])
                )
                staff.audit(
                    session, "partner.code.create", f"partner:{partner_id}", code=code.code, kind=str(code.kind)
                )
                return code.code

        async with shown_again(
            lambda refusal: self._partner_page(request, staff, partner_id, values, _at_field(refusal, "code"))
        ):
            code = await anyio.to_thread.run_sync(create)
        return redirect(f"/app/partners/{partner_id}", f"Code {code} created")

    @post("/{partner_id:uuid}/codes/{code_id:uuid}", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def set_code_active(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        partner_id: FromPath[UUID],
        code_id: FromPath[UUID],
    ) -> Redirect:
        active = (await checked_form(request)).get("active") == "true"

        def change() -> str:
            with staff.session() as session:
                if code_id not in {c.id for c in partners.list_codes(session, partner_id=partner_id)}:
                    raise NotFound("code not found for this partner")
                code = partners.set_code_active(session, code_id, active)
                staff.audit(session, "partner.code.update", f"partner:{partner_id}", code=code.code, active=active)
                return code.code

        code = await anyio.to_thread.run_sync(change)
        return redirect(f"/app/partners/{partner_id}", f"Code {code} {'activated' if active else 'retired'}")
