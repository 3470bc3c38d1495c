"""Request and response bodies of the partner program's tenant API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal, TypedDict, cast
from uuid import UUID

import msgspec

from api.fields import NOT_BLANK, Email, HttpUrl
from tenants.models import Partner, PartnerCode, Program, ProgramProduct
from tenants.partners import service as partners
from tenants.partners.report import PartnersReport, Totals

__all__ = [
    "CodeCreate",
    "CodePublic",
    "CodeUpdate",
    "FlatRate",
    "PartnerCreate",
    "PartnerPublic",
    "PartnerUpdate",
    "PartnersReportPublic",
    "PercentRate",
    "ProductPublic",
    "ProductSet",
    "ProgramCreate",
    "ProgramPublic",
    "ProgramUpdate",
    "Rate",
]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK, description="The program's name")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$(?!\n)", description="ISO 4217, e.g. EUR")]
RuleName = Annotated[
    Literal["first", "last"], msgspec.Meta(description="Which referrer a purchase credits: the first or the last")
]
WindowDays = Annotated[int, msgspec.Meta(ge=1, le=365, description="Days after a click that it may still credit")]
Tiers = Annotated[int, msgspec.Meta(ge=1, le=2, description="2: the recruiting partner earns the level-2 rate")]
HoldDays = Annotated[int, msgspec.Meta(ge=0, le=365, description="Days a commission waits before it is payable")]
MinorUnits = Annotated[int, msgspec.Meta(ge=0, le=10**15, description="In minor units of the currency (cents)")]
RecurringMonths = Annotated[
    int,
    msgspec.Meta(ge=0, le=1200, description="Months renewals earn; null: for the subscription's life"),
]
SelfReferral = Annotated[
    Literal["refuse", "hold"], msgspec.Meta(description="A buyer with the partner's own email: refused or held")
]
Shared = Annotated[
    Literal["none", "masked", "full"], msgspec.Meta(description="What partners see of the contacts they referred")
]
Code = Annotated[
    str,
    msgspec.Meta(
        min_length=2, max_length=64, pattern=r"^[a-z0-9-]{2,64}$(?!\n)", description="Lower-case letters, digits, -"
    ),
]
Product = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK, description="The product key of purchases")
]


class ProgramCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A partner program: its referrer rule, cookie window, tiers and payout terms."""

    name: Name
    landing_url: Annotated[HttpUrl, msgspec.Meta(description="The page referral links point at")]
    currency: Currency
    referrer_rule: RuleName = "first"
    cookie_window_days: WindowDays = 30
    tiers: Tiers = 1
    hold_days: HoldDays = 30
    minimum_payout: MinorUnits = 0
    recurring_months: RecurringMonths | None = None
    self_referral: SelfReferral = "refuse"
    shared_referral_fields: Shared = "masked"
    auto_approve: bool = False

    def settings(self) -> partners.ProgramSettings:
        return partners.ProgramSettings(**msgspec.structs.asdict(self))


class ProgramUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; omitted fields stay (``recurring_months: null`` means for the subscription's life)."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    landing_url: HttpUrl | msgspec.UnsetType = msgspec.UNSET
    currency: Currency | msgspec.UnsetType = msgspec.UNSET
    referrer_rule: RuleName | msgspec.UnsetType = msgspec.UNSET
    cookie_window_days: WindowDays | msgspec.UnsetType = msgspec.UNSET
    tiers: Tiers | msgspec.UnsetType = msgspec.UNSET
    hold_days: HoldDays | msgspec.UnsetType = msgspec.UNSET
    minimum_payout: MinorUnits | msgspec.UnsetType = msgspec.UNSET
    recurring_months: RecurringMonths | msgspec.UnsetType | None = msgspec.UNSET
    self_referral: SelfReferral | msgspec.UnsetType = msgspec.UNSET
    shared_referral_fields: Shared | msgspec.UnsetType = msgspec.UNSET
    auto_approve: bool | msgspec.UnsetType = msgspec.UNSET

    def settings(self) -> partners.ProgramSettings:
        given = {k: v for k, v in msgspec.structs.asdict(self).items() if v is not msgspec.UNSET}
        clear = "recurring_months" in given and given["recurring_months"] is None
        return partners.ProgramSettings(**given, clear_recurring=clear)


class ProgramPublic(msgspec.Struct):
    id: UUID
    name: str
    landing_url: str
    currency: str
    referrer_rule: RuleName
    cookie_window_days: int
    tiers: int
    hold_days: int
    minimum_payout: int
    recurring_months: int | None
    self_referral: SelfReferral
    shared_referral_fields: Shared
    auto_approve: bool
    portal_url: str
    """Where partners apply and log in."""
    created_at: datetime

    @classmethod
    def of(cls, program: Program, portal_url: str) -> ProgramPublic:
        return cls(
            id=program.id,
            name=program.name,
            landing_url=program.landing_url,
            currency=program.currency,
            referrer_rule=cast(RuleName, str(program.referrer_rule)),
            cookie_window_days=program.cookie_window_days,
            tiers=program.tiers,
            hold_days=program.hold_days,
            minimum_payout=program.minimum_payout,
            recurring_months=program.recurring_months,
            self_referral=cast(SelfReferral, program.self_referral),
            shared_referral_fields=cast(Shared, str(program.shared_referral_fields)),
            auto_approve=program.auto_approve,
            portal_url=portal_url,
            created_at=program.created_at,
        )


class PercentRate(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="percent"):
    """A share of the item's amount before tax, in basis points (1250 = 12.5 %)."""

    value: Annotated[int, msgspec.Meta(ge=0, le=10_000)]


class FlatRate(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="flat"):
    """A fixed amount per item, in minor units of the program's currency."""

    value: Annotated[int, msgspec.Meta(ge=0, le=10**15)]


Rate = PercentRate | FlatRate


def _rate(kind: str, value: int) -> Rate:
    return PercentRate(value) if kind == "percent" else FlatRate(value)


class ProductSet(msgspec.Struct, forbid_unknown_fields=True):
    """A product that earns in the program, with its level-1 rate and (two tiers) its level-2 rate."""

    product: Product
    level1: Rate
    level2: Rate | None = None


class ProductPublic(msgspec.Struct):
    product: str
    level1: Rate
    level2: Rate | None

    @classmethod
    def of(cls, row: ProgramProduct) -> ProductPublic:
        level2 = _rate(row.level2_kind, row.level2_value) if row.level2_kind and row.level2_value is not None else None
        return cls(row.product, _rate(row.level1_kind, row.level1_value), level2)


class PartnerCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A partner for the contact with this email (found or made)."""

    program_id: UUID
    email: Email
    first_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    last_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    parent_partner_id: Annotated[UUID, msgspec.Meta(description="The recruiting partner (tier 2)")] | None = None
    payout_email: Email | None = None
    status: Annotated[
        Literal["applied", "approved"], msgspec.Meta(description="approved: it gets a link code at once")
    ] = "applied"


class PartnerUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; omitted fields stay. Status changes through approve, reject and suspend."""

    payout_email: Email | msgspec.UnsetType = msgspec.UNSET
    parent_partner_id: UUID | msgspec.UnsetType = msgspec.UNSET


class PartnerPublic(msgspec.Struct):
    id: UUID
    program_id: UUID
    contact_id: UUID
    status: Literal["applied", "approved", "rejected", "suspended"]
    parent_partner_id: UUID | None
    payout_email: str | None
    status_changed_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, partner: Partner) -> PartnerPublic:
        return cls(
            id=partner.id,
            program_id=partner.program_id,
            contact_id=partner.contact_id,
            status=cast(Literal["applied", "approved", "rejected", "suspended"], str(partner.status)),
            parent_partner_id=partner.parent_partner_id,
            payout_email=partner.payout_email,
            status_changed_at=partner.status_changed_at,
            created_at=partner.created_at,
        )


class CodeCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A referral link code (``?ref=code``) or a promo code (typed at checkout), unique in the tenant."""

    partner_id: UUID
    code: Code
    kind: Literal["link", "promo"] = "link"


class CodeUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """A deactivated code records no more clicks and credits no more orders."""

    active: bool


class CodePublic(msgspec.Struct):
    id: UUID
    partner_id: UUID
    code: str
    kind: Literal["link", "promo"]
    active: bool
    link: str | None
    """The referral link (link codes), for the program's landing page."""
    created_at: datetime

    @classmethod
    def of(cls, code: PartnerCode, link: str | None) -> CodePublic:
        kind = cast(Literal["link", "promo"], str(code.kind))
        return cls(code.id, code.partner_id, code.code, kind, code.active, link, code.created_at)


Money = Annotated[dict[str, int], msgspec.Meta(description="Minor units (cents) per ISO 4217 currency; none when 0")]
PartnerStatusName = Literal["applied", "approved", "rejected", "suspended"]


class _Figures(TypedDict):
    clicks: int
    leads: int
    purchases: int
    customers: int
    revenue: dict[str, int]
    commission: dict[str, int]
    sub_partner_commission: dict[str, int]


class ReportFigures(msgspec.Struct, kw_only=True):
    """What a row of the partners report counts."""

    clicks: int
    leads: Annotated[int, msgspec.Meta(description="New contacts referred (first-referrer bindings)")]
    purchases: Annotated[int, msgspec.Meta(description="Purchases credited to the partner (held ones too)")]
    customers: Annotated[int, msgspec.Meta(description="Buyers' first credited purchases with the partner")]
    revenue: Annotated[Money, msgspec.Meta(description="Of the credited purchases, net of refunds, tax included")]
    commission: Annotated[Money, msgspec.Meta(description="Level 1, net of refunds; rejected lines count nothing")]
    sub_partner_commission: Annotated[Money, msgspec.Meta(description="Level 2, on the sales of recruited partners")]

    @staticmethod
    def values(totals: Totals) -> _Figures:
        return {
            "clicks": totals.clicks, "leads": totals.leads, "purchases": totals.purchases,
            "customers": totals.customers, "revenue": totals.revenue, "commission": totals.commission,
            "sub_partner_commission": totals.sub_partner_commission,
        }  # fmt: skip


class PartnerReportRow(ReportFigures, kw_only=True):
    partner_id: UUID
    email: str
    status: PartnerStatusName


class SubIdReportRow(ReportFigures, kw_only=True):
    partner_id: UUID
    sid: Annotated[str, msgspec.Meta(description="The SubID; empty for none (and for level-2 commissions)")]


class DayReportRow(ReportFigures, kw_only=True):
    day: date


class PartnersReportPublic(msgspec.Struct):
    """Per partner (every partner in scope), per SubID and per UTC day (those with activity, newest first)."""

    start: date
    end: date
    total: ReportFigures
    partners: list[PartnerReportRow]
    sub_ids: list[SubIdReportRow]
    days: list[DayReportRow]

    @classmethod
    def of(cls, report: PartnersReport) -> PartnersReportPublic:
        figures = ReportFigures.values
        return cls(
            start=report.start,
            end=report.end,
            total=ReportFigures(**figures(report.total)),
            partners=[
                PartnerReportRow(
                    partner_id=p.partner_id, email=p.email, status=cast(PartnerStatusName, p.status), **figures(p)
                )
                for p in report.partners
            ],
            sub_ids=[SubIdReportRow(partner_id=s.partner_id, sid=s.sid, **figures(s)) for s in report.sub_ids],
            days=[DayReportRow(day=d.day, **figures(d)) for d in report.days],
        )
