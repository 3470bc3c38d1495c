"""Purchases (from Stripe or the tenant's own server), their refunds, the payment references that tie a
Stripe charge to its purchase, and the Stripe webhook of each tenant with the events it received."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Column, LargeBinary, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field

from tenants.models.base import TenantOwned, new_id, timestamp_field

__all__ = [
    "Purchase",
    "PurchaseReference",
    "PurchaseRefund",
    "PurchaseSource",
    "PurchaseStatus",
    "StripeEvent",
    "StripeWebhook",
]


class PurchaseSource(StrEnum):
    STRIPE = "stripe"
    API = "api"


class PurchaseStatus(StrEnum):
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class Purchase(TenantOwned, table=True):
    """One sale, stored once per ``(source, external_id)``. Amounts are integer minor units (cents) of
    ``currency``; ``amount`` is what the buyer paid, tax included (``tax`` is its tax part)."""

    __tablename__ = "purchases"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    contact_id: UUID
    visitor_id: UUID | None = None
    """The browser the sale came from, when the shop passed its visitor token."""
    source: PurchaseSource = Field(sa_type=Text)
    external_id: str = Field(max_length=255)
    """The order's id at its source (a Stripe Checkout Session or invoice id, the shop's order id)."""
    amount: int = Field(sa_type=BigInteger)
    tax: int = Field(default=0, sa_type=BigInteger)
    currency: str = Field(max_length=3)
    """ISO 4217, upper-case."""
    items: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    """Each: product (the tenant's product key), name, quantity, unit_amount."""
    status: PurchaseStatus = Field(default=PurchaseStatus.PAID, sa_type=Text)
    refunded_amount: int = Field(default=0, sa_type=BigInteger)
    subscription_id: str | None = Field(default=None, max_length=255)
    promo_code: str | None = Field(default=None, max_length=64)
    """The code typed at checkout (a partner's promo code credits that partner)."""
    partner_id: UUID | None = None
    """The partner the tenant's call named explicitly: it beats every referral."""
    first_touch: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    """The contact's first touch when the purchase was recorded (later changes of the contact leave it)."""
    last_touch: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB(none_as_null=True)))
    new_customer: bool = False
    """The contact's first recorded purchase."""
    occurred_at: datetime = timestamp_field()
    created_at: datetime = timestamp_field()


class PurchaseReference(TenantOwned, table=True):
    """A payment id that names a purchase (a Stripe payment intent, charge or invoice), so a refund that
    only knows the charge finds its purchase."""

    __tablename__ = "purchase_references"

    source: PurchaseSource = Field(sa_type=Text, primary_key=True)
    reference: str = Field(max_length=255, primary_key=True)
    purchase_id: UUID


class PurchaseRefund(TenantOwned, table=True):
    """A refund, stored once per ``(source, payment_ref, external_id)``. ``purchase_id`` is None while its
    purchase has not arrived yet (Stripe may deliver a refund first); it is applied when the purchase lands."""

    __tablename__ = "purchase_refunds"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    purchase_id: UUID | None = None
    source: PurchaseSource = Field(sa_type=Text)
    payment_ref: str = Field(max_length=255)
    """What was refunded: the Stripe charge, or the purchase's id for a refund through the API."""
    external_id: str = Field(max_length=255)
    match_refs: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(Text), nullable=False))
    """References (:class:`PurchaseReference`) that find the purchase of a refund that came first."""
    amount: int = Field(sa_type=BigInteger)
    occurred_at: datetime = timestamp_field()
    created_at: datetime = timestamp_field()


class StripeWebhook(TenantOwned, table=True):
    """The tenant's Stripe webhook endpoint: the token in its URL names the tenant; the signing secret is
    encrypted at rest (``tenants.security.secrets``) and never leaves the server."""

    __tablename__ = "stripe_webhooks"
    __table_args__ = (UniqueConstraint("tenant_id", "endpoint_token", name="stripe_webhooks_endpoint_token_key"),)

    endpoint_token: str = Field(max_length=64)
    signing_secret: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    secret_set_at: datetime | None = timestamp_field(nullable=True, default=None)
    created_at: datetime = timestamp_field()


class StripeEvent(TenantOwned, table=True):
    """An event Stripe delivered, stored once per event id; pending until a drain processes it."""

    __tablename__ = "stripe_events"

    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=100)
    payload: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    received_at: datetime = timestamp_field()
    processed_at: datetime | None = timestamp_field(nullable=True, default=None)
    outcome: str | None = None
    """What processing did: recorded, refunded, ignored (and why), or failed after ``attempts`` tries."""
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    """Failed processing attempts; at the drain's limit the event is set aside (``failed: …``)."""
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
