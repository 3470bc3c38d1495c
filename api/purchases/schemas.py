"""Bodies of the purchases API and the Stripe integration."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from api.fields import END, NOT_BLANK, Email
from tenants.models import Purchase, PurchaseRefund, PurchaseSource, PurchaseStatus, StripeWebhook
from tenants.purchases import service as purchases
from tenants.purchases.stripe_webhooks import HANDLED_EVENTS, webhook_url

__all__ = [
    "ItemIn",
    "PurchaseCreate",
    "PurchaseDetail",
    "PurchasePage",
    "PurchasePublic",
    "RefundCreate",
    "RefundPublic",
    "StripeIntegration",
    "StripeIntegrationUpdate",
]

EXTERNAL_ID = rf"^[\x21-\x7e]{{1,255}}{END}"
ExternalId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=255, pattern=EXTERNAL_ID, description="Printable ASCII, no spaces")
]
MinorUnits = Annotated[
    int, msgspec.Meta(ge=0, le=purchases.MAX_AMOUNT, description="Integer minor units of the currency (cents)")
]
Currency = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=3,
        pattern=rf"^[A-Za-z]{{3}}{END}",
        description="ISO 4217 code such as USD or EUR (stored upper-case; an unknown code is refused with 422)",
    ),
]
Text200 = Annotated[str, msgspec.Meta(max_length=200)]


class ItemIn(msgspec.Struct, forbid_unknown_fields=True):
    """One line of the order."""

    product: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=200,
            pattern=NOT_BLANK,
            description="Your product key (a SKU, a Stripe product id): partner programs match products on it",
        ),
    ]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    unit_amount: MinorUnits = 0
    name: Text200 | None = None


class PurchaseCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A sale your server reports after the payment provider confirmed it. The buyer is ``contact_id``, else the
    contact of the browser whose visitor token you pass (when it is identified), else the contact with
    ``email`` (created if new). The same ``source`` + ``external_id`` twice is one purchase."""

    external_id: Annotated[
        ExternalId,
        msgspec.Meta(
            description="Your order id. For a Stripe Checkout payment that the webhook also reports, give the "
            "Checkout Session id (cs_…) with source `stripe`: both then land on one purchase"
        ),
    ]
    amount: Annotated[MinorUnits, msgspec.Meta(description="What the buyer paid, tax included, in minor units")]
    currency: Currency
    source: Annotated[
        Literal["api", "stripe"], msgspec.Meta(description="`stripe` when the order is a Stripe payment")
    ] = "api"
    tax: Annotated[MinorUnits, msgspec.Meta(description="The tax part of `amount`")] = 0
    items: Annotated[list[ItemIn], msgspec.Meta(max_length=purchases.MAX_ITEMS)] = msgspec.field(default_factory=list)
    subscription_id: ExternalId | None = None
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True, description="When it was paid; default now")] | None = None
    contact_id: UUID | None = None
    visitor_token: (
        Annotated[str, msgspec.Meta(max_length=1024, description="The browser's token from `trailmark('visitor', cb)`")]
        | None
    ) = None
    email: Email | None = None
    first_name: Text200 | None = None
    last_name: Text200 | None = None
    promo_code: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="A code typed at checkout")] | None
    ) = None
    partner_id: (
        Annotated[UUID, msgspec.Meta(description="An approved partner to credit, whatever the referrals say")] | None
    ) = None

    def order(self) -> purchases.Order:
        return purchases.Order(
            source=PurchaseSource(self.source),
            external_id=self.external_id,
            amount=self.amount,
            currency=self.currency,
            tax=self.tax,
            items=[purchases.Item(i.product, i.quantity, i.unit_amount, i.name) for i in self.items],
            subscription_id=self.subscription_id,
            occurred_at=self.occurred_at,
            promo_code=self.promo_code,
            partner_id=self.partner_id,
            buyer=purchases.Buyer(
                contact_id=self.contact_id,
                visitor_token=self.visitor_token,
                email=self.email,
                first_name=self.first_name,
                last_name=self.last_name,
            ),
        )


class RefundCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A refund of a purchase: all that remains when ``amount`` is left out."""

    amount: Annotated[int, msgspec.Meta(ge=1, le=purchases.MAX_AMOUNT, description="Minor units")] | None = None
    refund_id: (
        Annotated[ExternalId, msgspec.Meta(description="Your refund id: the same refund sent again changes nothing")]
        | None
    ) = None
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


class PurchaseItem(msgspec.Struct):
    product: str
    name: str | None
    quantity: int
    unit_amount: int


class PurchasePublic(msgspec.Struct):
    id: UUID
    contact_id: UUID
    visitor_id: UUID | None
    source: PurchaseSource
    external_id: str
    amount: int
    """What the buyer paid, tax included, in minor units."""
    tax: int
    currency: str
    items: list[PurchaseItem]
    status: PurchaseStatus
    refunded_amount: int
    subscription_id: str | None
    promo_code: str | None
    partner_id: UUID | None
    """The partner the order named explicitly, if it did (the credit itself: GET /api/v1/commissions)."""
    first_touch: dict[str, Any] | None
    """The contact's first touch when the purchase was recorded."""
    last_touch: dict[str, Any] | None
    new_customer: bool
    """The contact's first purchase."""
    occurred_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, purchase: Purchase) -> PurchasePublic:
        values = {name: getattr(purchase, name) for name in cls.__struct_fields__ if name != "items"}
        items = [PurchaseItem(i["product"], i.get("name"), i["quantity"], i["unit_amount"]) for i in purchase.items]
        return cls(items=items, **values)


class RefundPublic(msgspec.Struct):
    id: UUID
    source: PurchaseSource
    external_id: str
    amount: int
    occurred_at: datetime

    @classmethod
    def of(cls, refund: PurchaseRefund) -> RefundPublic:
        return cls(refund.id, refund.source, refund.external_id, refund.amount, refund.occurred_at)


class PurchaseDetail(PurchasePublic):
    refunds: list[RefundPublic] = msgspec.field(default_factory=list)
    """Oldest first."""


class PurchasePage(msgspec.Struct):
    items: list[PurchasePublic]
    next_cursor: str | None
    """``cursor`` for the older purchases; null on the last page."""


class StripeIntegrationUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The signing secret of your Stripe webhook endpoint (Developers → Webhooks → the endpoint → Signing
    secret). Stored encrypted; no answer ever shows it again."""

    signing_secret: Annotated[
        str, msgspec.Meta(min_length=10, max_length=200, pattern=rf"^whsec_[\x21-\x7e]+{END}", description="whsec_…")
    ]


class StripeIntegration(msgspec.Struct):
    webhook_url: str
    """Paste this as the endpoint URL in Stripe."""
    events: list[str]
    """The events to select for the endpoint."""
    signing_secret_set: bool
    """Whether a signing secret is stored (the secret itself is never shown)."""
    signing_secret_set_at: datetime | None

    @classmethod
    def of(cls, config: StripeWebhook) -> StripeIntegration:
        return cls(
            webhook_url=webhook_url(config),
            events=sorted(HANDLED_EVENTS),
            signing_secret_set=config.signing_secret is not None,
            signing_secret_set_at=config.secret_set_at,
        )
