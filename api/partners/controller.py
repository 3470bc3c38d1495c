"""Tenant API of the partner program: programs and their products, partners (approve, reject, suspend) and their
referral and promo codes, and the partners report."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter
from sqlmodel import Session

from api.openapi import AUTH, BODY, creates, problems
from api.partners.schemas import (
    CodeCreate,
    CodePublic,
    CodeUpdate,
    FlatRate,
    PartnerCreate,
    PartnerPublic,
    PartnersReportPublic,
    PartnerUpdate,
    PercentRate,
    ProductPublic,
    ProductSet,
    ProgramCreate,
    ProgramPublic,
    ProgramUpdate,
)
from tenants.accounts.service import ApiCaller
from tenants.models import CodeKind, PartnerCode, PartnerStatus, Program, Scope
from tenants.partners import report
from tenants.partners import service as partners
from tenants.partners.report import MAX_REPORT_DAYS

__all__ = ["PartnerCodesController", "PartnerProgramsController", "PartnersController"]


def _commission_rate(rate: PercentRate | FlatRate) -> partners.CommissionRate:
    return partners.CommissionRate("percent" if isinstance(rate, PercentRate) else "flat", rate.value)


def _program(session: Session, program: Program) -> ProgramPublic:
    return ProgramPublic.of(program, partners.portal_url(session, "login"))


class PartnerProgramsController(Controller):
    path = "/api/v1/partner-programs"
    tags = ["partners"]
    security = [{"apiKey": []}]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Create a partner program",
        responses=problems(*AUTH, *BODY),
        operation_class=creates("program_id", "getPartnerProgram", "updatePartnerProgram", "setProgramProduct"),
    )
    def create_partner_program(
        self, caller: NamedDependency[ApiCaller], data: JSONBody[ProgramCreate]
    ) -> ProgramPublic:
        """Partners apply and log in at its ``portal_url``; its links point at ``landing_url``."""
        with caller.session(Scope.WRITE) as session:
            return _program(session, partners.create_program(session, data.settings()))

    @get(sync_to_thread=True, summary="List partner programs", responses=problems(*AUTH))
    def list_partner_programs(self, caller: NamedDependency[ApiCaller]) -> list[ProgramPublic]:
        with caller.session(Scope.READ) as session:
            return [_program(session, p) for p in partners.list_programs(session)]

    @get(
        "/{program_id:uuid}", sync_to_thread=True, summary="Get a partner program", responses=problems(*AUTH, 400, 404)
    )
    def get_partner_program(self, caller: NamedDependency[ApiCaller], program_id: FromPath[UUID]) -> ProgramPublic:
        with caller.session(Scope.READ) as session:
            return _program(session, partners.get_program(session, program_id))

    @patch(
        "/{program_id:uuid}",
        sync_to_thread=True,
        summary="Change a partner program",
        responses=problems(*AUTH, *BODY, 404),
    )
    def update_partner_program(
        self, caller: NamedDependency[ApiCaller], program_id: FromPath[UUID], data: JSONBody[ProgramUpdate]
    ) -> ProgramPublic:
        """Only what is given changes; a new rule or window applies to purchases from now on."""
        with caller.session(Scope.WRITE) as session:
            return _program(session, partners.update_program(session, program_id, data.settings()))

    @post(
        "/{program_id:uuid}/products",
        status_code=200,
        sync_to_thread=True,
        summary="Add a product to a program, or change its rates",
        responses=problems(*AUTH, *BODY, 404),
    )
    def set_program_product(
        self, caller: NamedDependency[ApiCaller], program_id: FromPath[UUID], data: JSONBody[ProductSet]
    ) -> ProductPublic:
        """Only products of the program earn. 422 for a percent rate above 10000 basis points."""
        level1 = _commission_rate(data.level1)
        level2 = _commission_rate(data.level2) if data.level2 else None
        with caller.session(Scope.WRITE) as session:
            return ProductPublic.of(partners.set_product(session, program_id, data.product, level1, level2))

    @get(
        "/{program_id:uuid}/products",
        sync_to_thread=True,
        summary="List a program's products",
        responses=problems(*AUTH, 400, 404),
    )
    def list_program_products(
        self, caller: NamedDependency[ApiCaller], program_id: FromPath[UUID]
    ) -> list[ProductPublic]:
        with caller.session(Scope.READ) as session:
            return [ProductPublic.of(row) for row in partners.list_products(session, program_id)]

    @delete(
        "/{program_id:uuid}/products/{product:str}",
        status_code=204,
        sync_to_thread=True,
        summary="Remove a product from a program",
        responses=problems(*AUTH, 400, 404),
    )
    def delete_program_product(
        self, caller: NamedDependency[ApiCaller], program_id: FromPath[UUID], product: FromPath[str]
    ) -> None:
        """It earns no more commissions; past ones stay."""
        with caller.session(Scope.WRITE) as session:
            partners.delete_product(session, program_id, product)


Status = Annotated[
    Literal["applied", "approved", "rejected", "suspended"] | None, Parameter(description="Only partners with it")
]


class PartnersController(Controller):
    path = "/api/v1/partners"
    tags = ["partners"]
    security = [{"apiKey": []}]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Add a partner",
        responses=problems(*AUTH, *BODY, 404, 409),
        operation_class=creates("partner_id", "getPartner", "updatePartner", "approvePartner"),
    )
    def create_partner(self, caller: NamedDependency[ApiCaller], data: JSONBody[PartnerCreate]) -> PartnerPublic:
        """404 for an unknown program or parent; 409 when the person is a partner already. The partner chooses a
        portal password through "Forgot password?" at the portal, which mails the address a link."""
        with caller.session(Scope.WRITE) as session:
            partner = partners.create_partner(
                session,
                program_id=data.program_id,
                email=data.email,
                first_name=data.first_name,
                last_name=data.last_name,
                parent_partner_id=data.parent_partner_id,
                payout_email=data.payout_email,
                status=PartnerStatus(data.status),
            )
            return PartnerPublic.of(partner)

    @get("/report", sync_to_thread=True, summary="Partners report", responses=problems(*AUTH, 400, 422))
    def partners_report(
        self,
        caller: NamedDependency[ApiCaller],
        start: Annotated[date, Parameter(description="First day (UTC), inclusive")],
        end: Annotated[date, Parameter(description=f"Last day (UTC), inclusive; at most {MAX_REPORT_DAYS} days")],
        program_id: Annotated[UUID | None, Parameter(description="Only this program's partners")] = None,
        partner_id: Annotated[UUID | None, Parameter(description="Only this partner")] = None,
    ) -> PartnersReportPublic:
        """Clicks, leads, purchases, customers, revenue and commissions per partner, per SubID and per UTC day, from
        the rollups (the dashboard's and the portal's report). Money counts for the partner each purchase credited,
        on the purchase's day, under the SubID of the click that credited it. 422 for a range that ends before it
        starts or is too long; 503 when the report times out."""
        with caller.session(Scope.READ) as session:
            found = report.partners_report(session, start=start, end=end, program_id=program_id, partner_id=partner_id)
            return PartnersReportPublic.of(found)

    @get(sync_to_thread=True, summary="List partners", responses=problems(*AUTH, 400))
    def list_partners(
        self,
        caller: NamedDependency[ApiCaller],
        program_id: Annotated[UUID | None, Parameter(description="Only this program's partners")] = None,
        status: Status = None,
    ) -> list[PartnerPublic]:
        with caller.session(Scope.READ) as session:
            found = partners.list_partners(
                session, program_id=program_id, status=PartnerStatus(status) if status else None
            )
            return [PartnerPublic.of(p) for p in found]

    @get("/{partner_id:uuid}", sync_to_thread=True, summary="Get a partner", responses=problems(*AUTH, 400, 404))
    def get_partner(self, caller: NamedDependency[ApiCaller], partner_id: FromPath[UUID]) -> PartnerPublic:
        with caller.session(Scope.READ) as session:
            return PartnerPublic.of(partners.get_partner(session, partner_id))

    @patch("/{partner_id:uuid}", sync_to_thread=True, summary="Change a partner", responses=problems(*AUTH, *BODY, 404))
    def update_partner(
        self, caller: NamedDependency[ApiCaller], partner_id: FromPath[UUID], data: JSONBody[PartnerUpdate]
    ) -> PartnerPublic:
        """The payout email, or the recruiting partner (422 when it is not another partner of the program)."""
        with caller.session(Scope.WRITE) as session:
            partner = partners.update_partner(
                session,
                partner_id,
                payout_email=data.payout_email if isinstance(data.payout_email, str) else None,
                parent_partner_id=data.parent_partner_id if isinstance(data.parent_partner_id, UUID) else None,
            )
            return PartnerPublic.of(partner)

    def _set_status(self, caller: ApiCaller, partner_id: UUID, status: PartnerStatus) -> PartnerPublic:
        with caller.session(Scope.WRITE) as session:
            return PartnerPublic.of(partners.set_partner_status(session, partner_id, status))

    @post(
        "/{partner_id:uuid}/approve",
        status_code=200,
        sync_to_thread=True,
        summary="Approve a partner",
        responses=problems(*AUTH, 400, 404, 409),
    )
    def approve_partner(self, caller: NamedDependency[ApiCaller], partner_id: FromPath[UUID]) -> PartnerPublic:
        """From applied (or to lift a rejection or suspension): it gets a link code and a mail with the portal's
        address. 409 from no other status; approving an approved partner changes nothing."""
        return self._set_status(caller, partner_id, PartnerStatus.APPROVED)

    @post(
        "/{partner_id:uuid}/reject",
        status_code=200,
        sync_to_thread=True,
        summary="Reject a partner's application",
        responses=problems(*AUTH, 400, 404, 409),
    )
    def reject_partner(self, caller: NamedDependency[ApiCaller], partner_id: FromPath[UUID]) -> PartnerPublic:
        """Only an application (409 otherwise): the partner cannot log in."""
        return self._set_status(caller, partner_id, PartnerStatus.REJECTED)

    @post(
        "/{partner_id:uuid}/suspend",
        status_code=200,
        sync_to_thread=True,
        summary="Suspend a partner",
        responses=problems(*AUTH, 400, 404, 409),
    )
    def suspend_partner(self, caller: NamedDependency[ApiCaller], partner_id: FromPath[UUID]) -> PartnerPublic:
        """Only an approved partner (409 otherwise): its codes record no clicks and credit nothing until approved
        again; it cannot log in."""
        return self._set_status(caller, partner_id, PartnerStatus.SUSPENDED)


def _code(session: Session, code: PartnerCode) -> CodePublic:
    link = None
    if code.kind == CodeKind.LINK:
        partner = partners.get_partner(session, code.partner_id)
        link = partners.referral_link(partners.get_program(session, partner.program_id), code.code)
    return CodePublic.of(code, link)


class PartnerCodesController(Controller):
    path = "/api/v1/partner-codes"
    tags = ["partners"]
    security = [{"apiKey": []}]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Create a referral link code or a promo code",
        responses=problems(*AUTH, *BODY, 404, 409),
        operation_class=creates("code_id", "updatePartnerCode"),
    )
    def create_partner_code(self, caller: NamedDependency[ApiCaller], data: JSONBody[CodeCreate]) -> CodePublic:
        """404 for an unknown partner; 409 when the tenant has the code already (codes are unique per tenant)."""
        with caller.session(Scope.WRITE) as session:
            code = partners.create_code(session, partner_id=data.partner_id, code=data.code, kind=CodeKind(data.kind))
            return _code(session, code)

    @get(sync_to_thread=True, summary="List partner codes", responses=problems(*AUTH, 400))
    def list_partner_codes(
        self,
        caller: NamedDependency[ApiCaller],
        partner_id: Annotated[UUID | None, Parameter(description="Only this partner's codes")] = None,
    ) -> list[CodePublic]:
        with caller.session(Scope.READ) as session:
            return [_code(session, c) for c in partners.list_codes(session, partner_id=partner_id)]

    @patch(
        "/{code_id:uuid}",
        sync_to_thread=True,
        summary="Activate or deactivate a code",
        responses=problems(*AUTH, *BODY, 404),
    )
    def update_partner_code(
        self, caller: NamedDependency[ApiCaller], code_id: FromPath[UUID], data: JSONBody[CodeUpdate]
    ) -> CodePublic:
        with caller.session(Scope.WRITE) as session:
            return _code(session, partners.set_code_active(session, code_id, data.active))
