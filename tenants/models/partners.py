"""The partner (affiliate) program: programs and the products that earn, partners with their portal accounts and
codes, the referral clicks ingest records, and the referrers bound to contacts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Column, SmallInteger, Text
from sqlalchemy.dialects.postgresql import INET, JSONB
from sqlmodel import Field

from tenants.models.base import TenantOwned, new_id, timestamp_field

__all__ = [
    "CodeKind",
    "Commission",
    "CommissionKind",
    "CommissionStatus",
    "ContactReferrer",
    "Partner",
    "PartnerAccount",
    "PartnerCode",
    "PartnerStatus",
    "Payout",
    "PayoutStatus",
    "Program",
    "ProgramProduct",
    "PurchaseCredit",
    "ReferralClick",
    "ReferrerRule",
    "SharedReferralFields",
]


class ReferrerRule(StrEnum):
    """Which referrer a purchase credits when several referred the buyer (Ontraport's global setting)."""

    FIRST = "first"
    LAST = "last"


class SharedReferralFields(StrEnum):
    """What partners see of the contacts they referred."""

    NONE = "none"
    MASKED = "masked"
    FULL = "full"


class PartnerStatus(StrEnum):
    APPLIED = "applied"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"


class CodeKind(StrEnum):
    LINK = "link"
    """Rides on a referral link (``?ref=code``): the tracker records the click."""
    PROMO = "promo"
    """Typed at checkout: the order names it, and it credits the partner even without a click."""


class Program(TenantOwned, table=True):
    __tablename__ = "programs"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    name: str = Field(max_length=200)
    landing_url: str
    """The tenant's page that referral links point at (``?ref=code`` is appended)."""
    referrer_rule: ReferrerRule = Field(default=ReferrerRule.FIRST, sa_type=Text)
    cookie_window_days: int = 30
    """A referral credits only purchases within this many days (to the second) of its click."""
    tiers: int = 1
    """2: the partner who recruited the selling partner earns the level-2 commission."""
    hold_days: int = 30
    minimum_payout: int = Field(default=0, sa_type=BigInteger)
    """In minor units of ``currency``."""
    currency: str = Field(max_length=3)
    recurring_months: int | None = None
    """Renewals earn for this many months after the first payment; None: for the subscription's life."""
    self_referral: str = Field(default="refuse", sa_type=Text)
    """refuse: a buyer with the partner's own email earns nothing; hold: it is held for review."""
    shared_referral_fields: SharedReferralFields = Field(default=SharedReferralFields.MASKED, sa_type=Text)
    auto_approve: bool = False
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class ProgramProduct(TenantOwned, table=True):
    """A product that earns in a program. ``percent`` values are basis points, ``flat`` ones minor units."""

    __tablename__ = "program_products"

    program_id: UUID = Field(primary_key=True)
    product: str = Field(primary_key=True, max_length=200)
    """The ``product`` key of a purchase's items."""
    level1_kind: str = Field(sa_type=Text)
    level1_value: int = Field(sa_type=BigInteger)
    level2_kind: str | None = Field(default=None, sa_type=Text)
    level2_value: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = timestamp_field()


class Partner(TenantOwned, table=True):
    """A contact who refers customers in one program (one partnership per person and tenant)."""

    __tablename__ = "partners"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    program_id: UUID
    contact_id: UUID
    status: PartnerStatus = Field(default=PartnerStatus.APPLIED, sa_type=Text)
    parent_partner_id: UUID | None = None
    """The partner who recruited this one: it earns the level-2 commission of a two-tier program."""
    payout_email: str | None = Field(default=None, max_length=320)
    status_changed_at: datetime = timestamp_field()
    created_at: datetime = timestamp_field()


class PartnerAccount(TenantOwned, table=True):
    """The portal login of a partner: a password only once the address is proved by a mailed link."""

    __tablename__ = "partner_accounts"

    partner_id: UUID = Field(primary_key=True)
    password_hash: str | None = None
    password_changed_at: datetime | None = timestamp_field(nullable=True, default=None)
    email_verified_at: datetime | None = timestamp_field(nullable=True, default=None)
    last_login_ip: str | None = Field(default=None, sa_column=Column(INET))
    """Where the partner last logged in from: a referral from the same address is held for review."""
    created_at: datetime = timestamp_field()


class PartnerCode(TenantOwned, table=True):
    __tablename__ = "partner_codes"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    partner_id: UUID
    code: str = Field(max_length=64)
    """``[a-z0-9-]``, unique per tenant: safe in any URL and any checkout's coupon field."""
    kind: CodeKind = Field(sa_type=Text)
    active: bool = True
    created_at: datetime = timestamp_field()


class ReferralClick(TenantOwned, table=True):
    """A stored hit that carried a live code of an approved partner (written by ingest, once per hit)."""

    __tablename__ = "referral_clicks"

    hit_id: UUID = Field(primary_key=True)
    occurred_at: datetime = timestamp_field()
    visitor_id: UUID
    partner_id: UUID
    program_id: UUID
    code_id: UUID
    sid: str | None = Field(default=None, max_length=100)
    """The SubID the partner put on its link to split its traffic."""
    ip: str | None = Field(default=None, sa_column=Column(INET))


class ContactReferrer(TenantOwned, table=True):
    """The first or last referrer bound to a contact in a program, with the click and the rule that bound it."""

    __tablename__ = "contact_referrers"

    contact_id: UUID = Field(primary_key=True)
    program_id: UUID = Field(primary_key=True)
    position: str = Field(primary_key=True, sa_type=Text)
    """first (set once, for a contact that was new when referred) or last (every identification)."""
    partner_id: UUID
    click_hit_id: UUID | None = None
    clicked_at: datetime | None = timestamp_field(nullable=True, default=None)
    bound_at: datetime = timestamp_field()
    reason: str


class PurchaseCredit(TenantOwned, table=True):
    """The partner a purchase credited and why (one per purchase; a refused one earns nothing)."""

    __tablename__ = "purchase_credits"

    purchase_id: UUID = Field(primary_key=True)
    contact_id: UUID
    """The buyer (the portal sees no purchases, so it counts customers here)."""
    partner_id: UUID
    program_id: UUID
    source: str = Field(sa_type=Text)
    """explicit, promo_code, referral, first_referrer, last_referrer, or subscription (a renewal)."""
    status: str = Field(sa_type=Text)
    """credited, held (for review) or refused (self-referral)."""
    reason: str
    sid: str = ""
    """The SubID of the referral click that credited it ('' for a promo code, a named partner, or none)."""
    new_customer: bool = False
    """The buyer's first credit with this partner (refused ones aside): the partners report counts customers here."""
    created_at: datetime = timestamp_field()


class CommissionKind(StrEnum):
    SALE = "sale"
    RECURRING = "recurring"
    """A renewal of a subscription whose first payment credited the partner."""
    REFUND_ADJUSTMENT = "refund_adjustment"
    """A negative line: a refund of a commission already on a payout, taken back on the next one."""


class CommissionStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    PAID = "paid"
    REJECTED = "rejected"
    REVERSED = "reversed"
    """Refunded in full before it was paid: nothing is owed."""


class Commission(TenantOwned, table=True):
    """What a partner earned on one purchase at one level (amounts in minor units of ``currency``). The rates are
    copied onto the row, so a later change of the program's rates alters no past commission."""

    __tablename__ = "commissions"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    purchase_id: UUID
    partner_id: UUID
    program_id: UUID
    level: int = Field(sa_type=SmallInteger)
    kind: CommissionKind = Field(sa_type=Text)
    refund_key: str = ""
    """For a refund adjustment, the purchase's refunded total it accounts for ('' on earned lines)."""
    basis: int = Field(sa_type=BigInteger)
    """The item amounts (net of tax) the rates applied to."""
    earned_amount: int = Field(sa_type=BigInteger)
    amount: int = Field(sa_type=BigInteger)
    """What is owed now: the earned amount less refunds while unpaid; negative for a refund adjustment."""
    currency: str = Field(max_length=3)
    rates: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    """Per matching product: product, quantity, basis, kind (percent|flat), value, amount."""
    status: CommissionStatus = Field(sa_type=Text)
    payable_at: datetime | None = timestamp_field(nullable=True, default=None)
    """When the hold ends and beat approves it; None while it waits for the tenant's review."""
    reason: str
    payout_id: UUID | None = None
    sid: str = ""
    """The SubID the partners report puts it under: the crediting click's at level 1, '' at level 2."""
    created_at: datetime = timestamp_field()
    status_changed_at: datetime = timestamp_field()


class PayoutStatus(StrEnum):
    CREATED = "created"
    PAID = "paid"


class Payout(TenantOwned, table=True):
    """A batch of one partner's approved commissions (and refund adjustments) paid in one transfer."""

    __tablename__ = "payouts"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    partner_id: UUID
    amount: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    status: PayoutStatus = Field(default=PayoutStatus.CREATED, sa_type=Text)
    external_reference: str | None = Field(default=None, max_length=255)
    """The payment's id at the tenant's bank or payment provider: unique, so a retried mark-paid pays once."""
    created_at: datetime = timestamp_field()
    paid_at: datetime | None = timestamp_field(nullable=True, default=None)
