"""Tenant API for purchases and refunds, the Stripe integration's settings, and Stripe's webhook endpoint."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter

from api.openapi import AUTH, BODY, creates, problems
from api.purchases.schemas import (
    PurchaseCreate,
    PurchaseDetail,
    PurchasePage,
    PurchasePublic,
    RefundCreate,
    RefundPublic,
    StripeIntegration,
    StripeIntegrationUpdate,
)
from tenants.accounts.service import ApiCaller
from tenants.models import Purchase, Scope
from tenants.purchases import service as purchases
from tenants.purchases import stripe_webhooks

__all__ = ["PurchasesController", "StripeIntegrationController", "stripe_webhook"]


def _detail(session: Any, purchase: Purchase) -> PurchaseDetail:
    refunds = [RefundPublic.of(r) for r in purchases.list_refunds(session, purchase.id)]
    public = PurchasePublic.of(purchase)
    return PurchaseDetail(**{name: getattr(public, name) for name in PurchasePublic.__struct_fields__}, refunds=refunds)


class PurchasesController(Controller):
    path = "/api/v1/purchases"
    tags = ["purchases"]
    security = [{"apiKey": []}]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Record a purchase",
        responses={
            200: ResponseSpec(PurchasePublic, description="This order was recorded before: the stored purchase"),
            **problems(*AUTH, *BODY, 409),
        },
        operation_class=creates("purchase_id", "getPurchase", "refundPurchase"),
        response_description="The new purchase",
    )
    def record_purchase(
        self, caller: NamedDependency[ApiCaller], data: JSONBody[PurchaseCreate]
    ) -> Response[PurchasePublic]:
        """201 with the new purchase; 200 with the stored one when ``source`` + ``external_id`` (or the same
        Stripe payment) was recorded before; 409 when that external id was recorded with another amount or
        currency; 422 when the buyer cannot be found (no identified visitor, no email) or a value breaks a rule."""
        with caller.session(Scope.WRITE) as session:
            recorded = purchases.record_purchase(session, data.order())
            body = PurchasePublic.of(recorded.purchase)
        return Response(body, status_code=201 if recorded.created else 200)

    @get(sync_to_thread=True, summary="List purchases", responses=problems(*AUTH, 400, 422))
    def list_purchases(
        self,
        caller: NamedDependency[ApiCaller],
        contact_id: Annotated[UUID | None, Parameter(description="Only this contact's purchases")] = None,
        cursor: Annotated[str | None, Parameter(description="`next_cursor` of a page: the older purchases")] = None,
        limit: Annotated[int, Parameter(ge=1, le=purchases.MAX_PAGE, description="Page size")] = 50,
    ) -> PurchasePage:
        """Newest first (by when they were paid), one keyset page at a time; 422 for a cursor this API did not
        return."""
        with caller.session(Scope.READ) as session:
            page = purchases.list_purchases(session, contact_id=contact_id, cursor=cursor, limit=limit)
            return PurchasePage([PurchasePublic.of(p) for p in page.items], page.next_cursor)

    @get("/{purchase_id:uuid}", sync_to_thread=True, summary="Get a purchase", responses=problems(*AUTH, 400, 404))
    def get_purchase(self, caller: NamedDependency[ApiCaller], purchase_id: FromPath[UUID]) -> PurchaseDetail:
        """The purchase with its refunds."""
        with caller.session(Scope.READ) as session:
            return _detail(session, purchases.get_purchase(session, purchase_id))

    @post(
        "/{purchase_id:uuid}/refunds",
        status_code=201,
        sync_to_thread=True,
        summary="Refund a purchase, fully or partly",
        responses={
            200: ResponseSpec(PurchaseDetail, description="This refund id was applied before: nothing changed"),
            **problems(*AUTH, *BODY, 404),
        },
    )
    def refund_purchase(
        self, caller: NamedDependency[ApiCaller], purchase_id: FromPath[UUID], data: JSONBody[RefundCreate]
    ) -> Response[PurchaseDetail]:
        """Without ``amount``, all that remains is refunded. 422 for more than remains (or nothing left); the
        status follows (``partially_refunded``, ``refunded``). 200 when ``refund_id`` was applied before."""
        with caller.session(Scope.WRITE) as session:
            refunded = purchases.refund_purchase(
                session, purchase_id, amount=data.amount, refund_id=data.refund_id, occurred_at=data.occurred_at
            )
            assert refunded.purchase is not None
            body = _detail(session, refunded.purchase)
        return Response(body, status_code=201 if refunded.created else 200)


class StripeIntegrationController(Controller):
    path = "/api/v1/integrations/stripe"
    tags = ["purchases"]
    security = [{"apiKey": []}]

    @get(sync_to_thread=True, summary="The Stripe webhook endpoint's settings", responses=problems(*AUTH))
    def get_stripe_integration(self, caller: NamedDependency[ApiCaller]) -> StripeIntegration:
        """The URL to paste into Stripe and the events to select there; whether a signing secret is stored
        (never the secret)."""
        with caller.session(Scope.READ) as session:
            return StripeIntegration.of(stripe_webhooks.webhook_config(session))

    @put(
        sync_to_thread=True,
        summary="Store the Stripe webhook signing secret",
        responses=problems(*AUTH, *BODY),
    )
    def set_stripe_integration(
        self, caller: NamedDependency[ApiCaller], data: JSONBody[StripeIntegrationUpdate]
    ) -> StripeIntegration:
        """Write-only: the secret is stored encrypted and replaces any earlier one (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            return StripeIntegration.of(stripe_webhooks.set_signing_secret(session, data.signing_secret))


@post("/hooks/stripe/{endpoint_token:str}", include_in_schema=False, status_code=200)
async def stripe_webhook(request: Request[Any, Any, Any], endpoint_token: FromPath[str]) -> dict[str, Any]:
    """Stripe's deliveries: verified on the raw body, stored once, processed by a worker. 400 with the reason
    for a missing or bad signature (Stripe shows it in the endpoint's delivery log), 404 for an unknown URL."""
    payload = await request.body()
    signature = request.headers.get("stripe-signature")
    received = await anyio.to_thread.run_sync(lambda: stripe_webhooks.receive_event(endpoint_token, payload, signature))
    return {"received": True, "id": received.event_id, "duplicate": received.handled and not received.stored}
