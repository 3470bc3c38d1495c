"""Tenant API of commissions and payouts: list and review commissions, batch the payable ones into payouts,
export a payout as a mass-payment CSV, and mark it paid once."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast
from uuid import UUID

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter

from api.fields import NOT_BLANK
from api.openapi import AUTH, BODY, problems
from api.web.downloads import csv_download
from tenants.accounts.service import ApiCaller
from tenants.models import Commission, CommissionStatus, Payout, PayoutStatus, Scope
from tenants.partners import commissions, payouts

__all__ = ["CommissionsController", "PayoutsController"]

CommissionStatusName = Literal["pending", "approved", "paid", "rejected", "reversed"]


class RatePublic(msgspec.Struct):
    product: str
    quantity: int
    basis: int
    kind: Literal["percent", "flat"]
    value: int
    """Basis points for percent, minor units per unit for flat: as the program said when the sale happened."""
    amount: int


class CommissionPublic(msgspec.Struct):
    id: UUID
    purchase_id: UUID
    partner_id: UUID
    program_id: UUID
    level: int
    kind: Literal["sale", "recurring", "refund_adjustment"]
    basis: int
    earned_amount: int
    amount: int
    currency: str
    rates: list[RatePublic]
    status: CommissionStatusName
    payable_at: datetime | None
    reason: str
    payout_id: UUID | None
    created_at: datetime
    status_changed_at: datetime

    @classmethod
    def of(cls, row: Commission) -> CommissionPublic:
        return cls(
            id=row.id,
            purchase_id=row.purchase_id,
            partner_id=row.partner_id,
            program_id=row.program_id,
            level=row.level,
            kind=cast(Any, str(row.kind)),
            basis=row.basis,
            earned_amount=row.earned_amount,
            amount=row.amount,
            currency=row.currency,
            rates=[msgspec.convert(rate, RatePublic) for rate in row.rates],
            status=cast(CommissionStatusName, str(row.status)),
            payable_at=row.payable_at,
            reason=row.reason,
            payout_id=row.payout_id,
            created_at=row.created_at,
            status_changed_at=row.status_changed_at,
        )


class CommissionReject(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(pattern=NOT_BLANK, max_length=500)] | None = None


class PayoutPublic(msgspec.Struct):
    id: UUID
    partner_id: UUID
    amount: int
    """Minor units: the sum of its lines (refund adjustments are negative lines)."""
    currency: str
    status: Literal["created", "paid"]
    external_reference: str | None
    created_at: datetime
    paid_at: datetime | None

    @classmethod
    def of(cls, payout: Payout) -> PayoutPublic:
        return cls(
            id=payout.id,
            partner_id=payout.partner_id,
            amount=payout.amount,
            currency=payout.currency,
            status=cast(Literal["created", "paid"], str(payout.status)),
            external_reference=payout.external_reference,
            created_at=payout.created_at,
            paid_at=payout.paid_at,
        )


class PayoutDetail(PayoutPublic):
    lines: list[CommissionPublic] = msgspec.field(default_factory=list)


class PayoutPaid(msgspec.Struct, forbid_unknown_fields=True):
    external_reference: Annotated[
        str,
        msgspec.Meta(
            pattern=NOT_BLANK, max_length=255, description="The payment's id at your bank or payment provider"
        ),
    ]


class CommissionsController(Controller):
    path = "/api/v1/commissions"
    tags = ["partners"]
    security = [{"apiKey": []}]

    @get(sync_to_thread=True, summary="List commissions", responses=problems(*AUTH, 400))
    def list_commissions(
        self,
        caller: NamedDependency[ApiCaller],
        partner_id: Annotated[UUID | None, Parameter(description="Only this partner's")] = None,
        status: Annotated[CommissionStatusName | None, Parameter(description="Only with this status")] = None,
        payout_id: Annotated[UUID | None, Parameter(description="Only the lines of this payout")] = None,
        limit: Annotated[int, Parameter(ge=1, le=commissions.MAX_PAGE)] = 100,
    ) -> list[CommissionPublic]:
        """Newest first."""
        with caller.session(Scope.READ) as session:
            found = commissions.list_commissions(
                session,
                partner_id=partner_id,
                status=CommissionStatus(status) if status else None,
                payout_id=payout_id,
                limit=limit,
            )
            return [CommissionPublic.of(c) for c in found]

    @get("/{commission_id:uuid}", sync_to_thread=True, summary="Get a commission", responses=problems(*AUTH, 400, 404))
    def get_commission(self, caller: NamedDependency[ApiCaller], commission_id: FromPath[UUID]) -> CommissionPublic:
        with caller.session(Scope.READ) as session:
            return CommissionPublic.of(commissions.get_commission(session, commission_id))

    @post(
        "/{commission_id:uuid}/approve",
        status_code=200,
        sync_to_thread=True,
        summary="Approve a commission",
        responses=problems(*AUTH, 400, 404, 409),
    )
    def approve_commission(self, caller: NamedDependency[ApiCaller], commission_id: FromPath[UUID]) -> CommissionPublic:
        """A pending or held commission becomes payable now; approving an approved one changes nothing; 409 from
        any other status."""
        with caller.session(Scope.WRITE) as session:
            return CommissionPublic.of(commissions.approve_commission(session, commission_id))

    @post(
        "/{commission_id:uuid}/reject",
        status_code=200,
        sync_to_thread=True,
        summary="Reject a commission",
        responses=problems(*AUTH, *BODY, 404, 409),
    )
    def reject_commission(
        self,
        caller: NamedDependency[ApiCaller],
        commission_id: FromPath[UUID],
        data: JSONBody[CommissionReject | None] = None,
    ) -> CommissionPublic:
        """A pending or approved commission not on a payout is never paid; 409 otherwise."""
        with caller.session(Scope.WRITE) as session:
            reason = data.reason if data else None
            return CommissionPublic.of(commissions.reject_commission(session, commission_id, reason))


class PayoutsController(Controller):
    path = "/api/v1/payouts"
    tags = ["partners"]
    security = [{"apiKey": []}]

    @post(status_code=201, sync_to_thread=True, summary="Create the payouts due", responses=problems(*AUTH))
    def create_payouts(self, caller: NamedDependency[ApiCaller]) -> list[PayoutPublic]:
        """One payout per partner and currency whose approved, unpaid commissions (less refund adjustments) reach
        the program's minimum; an empty list when none does."""
        with caller.session(Scope.WRITE) as session:
            return [PayoutPublic.of(p) for p in payouts.create_payouts(session)]

    @get(sync_to_thread=True, summary="List payouts", responses=problems(*AUTH, 400))
    def list_payouts(
        self,
        caller: NamedDependency[ApiCaller],
        partner_id: Annotated[UUID | None, Parameter(description="Only this partner's")] = None,
        status: Annotated[Literal["created", "paid"] | None, Parameter(description="Only with this status")] = None,
    ) -> list[PayoutPublic]:
        with caller.session(Scope.READ) as session:
            found = payouts.list_payouts(
                session, partner_id=partner_id, status=PayoutStatus(status) if status else None
            )
            return [PayoutPublic.of(p) for p in found]

    @get("/{payout_id:uuid}", sync_to_thread=True, summary="Get a payout", responses=problems(*AUTH, 400, 404))
    def get_payout(self, caller: NamedDependency[ApiCaller], payout_id: FromPath[UUID]) -> PayoutDetail:
        """The payout with its lines (commissions and refund adjustments)."""
        with caller.session(Scope.READ) as session:
            payout = PayoutPublic.of(payouts.get_payout(session, payout_id))
            lines = [
                CommissionPublic.of(c)
                for c in commissions.list_commissions(session, payout_id=payout_id, limit=commissions.MAX_PAGE)
            ]
            return PayoutDetail(**msgspec.structs.asdict(payout), lines=lines)

    @get(
        "/{payout_id:uuid}/export.csv",
        sync_to_thread=True,
        summary="A payout as a mass-payment CSV",
        media_type="text/csv; charset=utf-8",
        responses={
            200: ResponseSpec(
                str, description="email,amount,currency,reference", media_type="text/csv", generate_examples=False
            ),
            **problems(*AUTH, 400, 404),
        },
    )
    def export_payout(self, caller: NamedDependency[ApiCaller], payout_id: FromPath[UUID]) -> Response[str]:
        """Columns ``email,amount,currency,reference``: the payout e-mail, the amount in major units (12.50), the
        currency, and the payout id to quote as the payment's reference."""
        with caller.session(Scope.READ) as session:
            body = payouts.payout_csv(session, payout_id)
        return csv_download(body, f"payout-{payout_id}.csv")

    @post(
        "/{payout_id:uuid}/paid",
        status_code=200,
        sync_to_thread=True,
        summary="Mark a payout paid",
        responses=problems(*AUTH, *BODY, 404, 409),
    )
    def mark_payout_paid(
        self, caller: NamedDependency[ApiCaller], payout_id: FromPath[UUID], data: JSONBody[PayoutPaid]
    ) -> PayoutPublic:
        """Its commissions become paid. The same reference again answers the paid payout unchanged; another
        reference on a paid payout, or one that marked another payout paid, is 409."""
        with caller.session(Scope.WRITE) as session:
            return PayoutPublic.of(payouts.mark_payout_paid(session, payout_id, data.external_reference).payout)
