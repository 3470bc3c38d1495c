"""Purchases and Integrations → Stripe: the tenant's sales (keyset-paged, filtered), each purchase with its
items, refunds and touches, the refund form, and connecting Stripe (the webhook URL, the events to select, the
write-only signing secret, the last events received). Over the REST API's services and request structs."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter
from litestar.response import Redirect, Template

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.manage_input import NO_REFUSAL, Refusal, parsed, shown_again
from api.dashboard.rendering import redirect, screen
from api.purchases.schemas import RefundCreate, StripeIntegrationUpdate
from api.web.csrf import checked_form
from tenants.contacts.service import emails_of, find_by_email, get_contact
from tenants.errors import Invalid
from tenants.models import Purchase, PurchaseSource, PurchaseStatus, UserRole
from tenants.partners import commissions
from tenants.partners import service as partners
from tenants.purchases import service as purchases
from tenants.purchases import stripe_webhooks

__all__ = ["PurchasesController", "StripeController"]

PAGE_SIZE = 50
Filter = Annotated[str | None, Parameter(required=False)]


def _choice(value: str | None, enum: type[PurchaseStatus] | type[PurchaseSource]) -> Any:
    """A filter from the address: one of the enum's values, or none (an empty select sends "")."""
    return enum(value) if value in {member.value for member in enum} else None


class PurchasesController(Controller):
    path = "/app/purchases"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def list_purchases(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        status: Filter = None,
        source: Filter = None,
        contact: Filter = None,
        cursor: Filter = None,
    ) -> Template:
        wanted_status = _choice(status, PurchaseStatus)
        wanted_source = _choice(source, PurchaseSource)

        def read() -> tuple[purchases.PurchasePage, dict[UUID, str], UUID | None]:
            with staff.session() as session:
                contact_id = None
                if contact:
                    # The contact filter takes the contact's id (from its page) or its email.
                    try:
                        contact_id = UUID(contact)
                    except ValueError:
                        found = find_by_email(session, contact)
                        if found is None:
                            raise Invalid("no contact has that email", {"contact": "no contact has it"}) from None
                        contact_id = found.id
                found_page = purchases.list_purchases(
                    session,
                    contact_id=contact_id,
                    status=wanted_status,
                    source=wanted_source,
                    cursor=cursor or None,
                    limit=PAGE_SIZE,
                )
                emails = emails_of(session, (p.contact_id for p in found_page.items))
                return found_page, emails, contact_id

        found, emails, _ = await anyio.to_thread.run_sync(read)
        filters = {"status": status or "", "source": source or "", "contact": contact or ""}
        return screen(
            request,
            staff,
            "dashboard/purchases/list.html",
            section="purchases",
            title="Purchases",
            purchases=found.items,
            emails=emails,
            next_cursor=found.next_cursor,
            filters=filters,
            statuses=[s.value for s in PurchaseStatus],
            sources=[s.value for s in PurchaseSource],
        )

    async def _purchase_page(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        purchase_id: UUID,
        refund_values: dict[str, str] | None = None,
        refund_refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        def read() -> tuple[Purchase, list[Any], str, Any, list[Any], dict[UUID, str]]:
            with staff.session() as session:
                purchase = purchases.get_purchase(session, purchase_id)
                refunds = purchases.list_refunds(session, purchase_id)
                credit, earned = commissions.purchase_commissions(session, purchase_id)
                partner_ids = {row.partner_id for row in earned} | ({credit.partner_id} if credit else set())
                partner_emails = partners.partner_emails(session, partner_ids)
                email = get_contact(session, purchase.contact_id).email
                return purchase, refunds, email, credit, earned, partner_emails

        purchase, refunds, email, credit, earned, partner_emails = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/purchases/purchase.html",
            section="purchases",
            title=f"Purchase {purchase.external_id}",
            status=refund_refusal.status,
            purchase=purchase,
            refunds=refunds,
            email=email,
            remaining=purchase.amount - purchase.refunded_amount,
            refund_values=refund_values or {"amount": "", "refund_id": ""},
            refund_refusal=refund_refusal,
            can_refund=staff.can(UserRole.ADMIN),
            credit=credit,
            commissions=earned,
            partner_emails=partner_emails,
        )

    @get("/{purchase_id:uuid}")
    async def show_purchase(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], purchase_id: FromPath[UUID]
    ) -> Template:
        return await self._purchase_page(request, staff, purchase_id)

    @post("/{purchase_id:uuid}/refunds", guards=[requires(UserRole.ADMIN)], status_code=303)
    async def refund(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], purchase_id: FromPath[UUID]
    ) -> Redirect:
        form = await checked_form(request)
        values = {"amount": form.get("amount", "").strip(), "refund_id": form.get("refund_id", "").strip()}

        def refund() -> int:
            data = parsed("refund", {k: v for k, v in values.items() if v}, RefundCreate)
            with staff.session() as session:
                before = purchases.get_purchase(session, purchase_id).refunded_amount
                refunded = purchases.refund_purchase(session, purchase_id, amount=data.amount, refund_id=data.refund_id)
                assert refunded.purchase is not None
                amount = refunded.purchase.refunded_amount - before
                if refunded.created:
                    staff.audit(session, "purchase.refund", f"purchase:{purchase_id}", amount=amount)
                return amount

        async with shown_again(lambda refusal: self._purchase_page(request, staff, purchase_id, values, refusal)):
            amount = await anyio.to_thread.run_sync(refund)
        message = f"Refunded {amount} (minor units)" if amount else "That refund id was applied before: nothing changed"
        return redirect(f"/app/purchases/{purchase_id}", message)


class StripeController(Controller):
    path = "/app/integrations/stripe"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    async def _page(
        self, request: Request[Any, Any, Any], staff: StaffCaller, refusal: Refusal = NO_REFUSAL
    ) -> Template:
        def read() -> dict[str, Any]:
            with staff.session() as session:
                config = stripe_webhooks.webhook_config(session)
                return {
                    "webhook_url": stripe_webhooks.webhook_url(config),
                    "secret_set_at": config.secret_set_at,
                    "events": stripe_webhooks.recent_events(session),
                }

        return screen(
            request,
            staff,
            "dashboard/purchases/stripe.html",
            section="stripe",
            title="Stripe",
            status=refusal.status,
            **await anyio.to_thread.run_sync(read),
            handled_events=sorted(stripe_webhooks.HANDLED_EVENTS),
            refusal=refusal,
            can_set_secret=staff.can(UserRole.ADMIN),
        )

    @get("/")
    async def show(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return await self._page(request, staff)

    @post("/", guards=[requires(UserRole.ADMIN)], status_code=303)
    async def set_secret(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        secret = (await checked_form(request)).get("signing_secret", "")

        def store() -> None:
            data = parsed("signing secret", {"signing_secret": secret}, StripeIntegrationUpdate)
            with staff.session() as session:
                stripe_webhooks.set_signing_secret(session, data.signing_secret)
                staff.audit(session, "stripe.secret.set", "integration:stripe")  # never the secret itself

        # A refused secret comes back with the reason only: the typed secret is never written into a page.
        async with shown_again(lambda refusal: self._page(request, staff, _without_value(refusal))):
            await anyio.to_thread.run_sync(store)
        return redirect("/app/integrations/stripe", "Signing secret stored: Stripe's deliveries are now verified")


def _without_value(refusal: Refusal) -> Refusal:
    """msgspec's reasons can quote what was typed; a secret's must not."""
    return Refusal(
        "the signing secret is invalid",
        refusal.status,
        {"signing_secret": "must be the endpoint's signing secret from Stripe, starting with whsec_"},
    )
