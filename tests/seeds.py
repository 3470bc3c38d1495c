"""One seeder per tenant table: gives a tenant at least one row in it, so the isolation tests can
prove every table is walled off. Sign-up already fills tenants, tenant_users and api_keys; a new
tenant table without a seeder here fails ``test_every_tenant_table_has_a_seeder``."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import uuid4

from sqlalchemy import text
from sqlmodel import Session

from tenants.isolation import current_tenant_id
from tenants.models import OutboxMessage, new_id
from tenants.reports.rollups import KEPT_SHAPES
from tenants.tracking.hits import Envelope, Hit
from tenants.tracking.ingest import store_envelopes
from tenants.tracking.sites import create_site


def _outbox(session: Session) -> None:
    # Added directly, not through enqueue(), so no relay publishes and deletes it.
    session.add(OutboxMessage(task="trailmark.system.ping", args=["seed"], queue="default"))


def _tracking(session: Session) -> None:
    """A site, a visitor and one visit, stored the way ingest stores them."""
    site = create_site(session, name="Seed", allowed_origins=["https://seed.example"])
    now = int(time.time() * 1000)
    hit = Hit(hit_id=uuid4(), ts=now, url="https://seed.example/?utm_source=seed", path="/")
    envelope = Envelope(
        tenant_id=current_tenant_id(session),
        site_id=site.id,
        visitor_id=new_id(),
        received_at=now,
        hits=[hit],
    )
    store_envelopes(session, [envelope])


def _cookieless(session: Session) -> None:
    """The id of a counted cookieless hit, as ingest records it beside the counts."""
    session.execute(
        text("INSERT INTO cookieless_counted_hits (tenant_id, hit_id, counted_on) VALUES (:t, :h, current_date)"),
        {"t": current_tenant_id(session), "h": uuid4()},
    )


def _identity(session: Session) -> None:
    """A custom field, a contact identified by a form, a tracked link and its click."""
    from tenants.contacts.service import ContactChanges, create_field, upsert_by_email
    from tenants.forms.service import create_form
    from tenants.identity.service import link_visitor
    from tenants.links.service import create_link
    from tenants.models import Evidence, FormSubmission, LinkClick

    site = create_site(session, name="Seed forms", allowed_origins=["https://seed.example"])
    create_field(session, key=f"plan_{uuid4().hex[:6]}", label="Plan", type="text", sensitive=True)
    contact, _ = upsert_by_email(
        session, ContactChanges(email=f"seed-{uuid4().hex[:8]}@example.com", first_name="Seed")
    )
    form = create_form(session, site_id=site.id, name="Seed", fields=[{"name": "email", "maps_to": "email"}])
    visitor_id = new_id()
    link_visitor(session, visitor_id=visitor_id, contact_id=contact.id, evidence=Evidence.FORM, site_id=site.id)
    session.add(FormSubmission(form_id=form.id, contact_id=contact.id, visitor_id=visitor_id, data={"email": "x"}))
    link = create_link(session, contact_id=contact.id, target_url="https://seed.example/offer")
    session.flush()
    session.add(LinkClick(link_id=link.id, contact_id=contact.id, identifies=False, reason="seed"))


def _memberships(session: Session) -> None:
    """A membership site with a member, and a page with a block only members see."""
    from tenants.memberships.service import create_member, create_membership_site
    from tenants.pages.service import create_page

    site = create_membership_site(session, name="Seed club", registration="open")
    create_member(session, site_id=site.id, email=f"member-{uuid4().hex[:8]}@example.com", first_name="Mem")
    create_page(
        session,
        slug=f"seed-{uuid4().hex[:6]}",
        title="Seed",
        blocks=[{"kind": "html", "html": "<p>Hi {{contact.first_name|there}}</p>", "visible_to": ["logged_in"]}],
    )


def _partners(session: Session) -> None:
    """A program with a product, an approved partner with a portal account and codes, a referral click stored by
    ingest, and the referred contact it bound when that browser filled a form."""
    from tenants.contacts.service import ContactChanges, upsert_by_email
    from tenants.identity.service import link_visitor
    from tenants.models import CodeKind, Evidence, PartnerAccount, PartnerStatus, utcnow
    from tenants.partners import service as partners

    program = partners.create_program(
        session, partners.ProgramSettings(name="Seed friends", landing_url="https://seed.example/", currency="EUR")
    )
    partners.set_product(session, program.id, "seed-course", partners.CommissionRate("percent", 2000), None)
    partner = partners.create_partner(
        session,
        program_id=program.id,
        email=f"partner-{uuid4().hex[:8]}@example.com",
        status=PartnerStatus.APPROVED,
    )
    session.add(PartnerAccount(partner_id=partner.id, email_verified_at=utcnow()))
    code = partners.create_code(session, partner_id=partner.id, code=f"seed-{uuid4().hex[:8]}", kind=CodeKind.LINK)
    site = create_site(session, name="Seed partners", allowed_origins=["https://seed.example"])
    now = int(time.time() * 1000)
    visitor_id = new_id()
    landing = Hit(
        hit_id=uuid4(), ts=now, url=f"https://seed.example/?ref={code.code}", path="/", partner_code=code.code
    )
    store_envelopes(
        session,
        [
            Envelope(
                tenant_id=current_tenant_id(session),
                site_id=site.id,
                visitor_id=visitor_id,
                received_at=now,
                hits=[landing],
            )
        ],
    )
    referred, created = upsert_by_email(session, ContactChanges(email=f"referred-{uuid4().hex[:8]}@example.com"))
    link_visitor(session, visitor_id=visitor_id, contact_id=referred.id, evidence=Evidence.FORM, new_contact=created)


def _audit(session: Session) -> None:
    from tenants.audit.service import record_action

    record_action(session, actor_id=None, actor_email="seed@example.com", action="site.update", subject="site:seed")


def _purchases(session: Session) -> None:
    """A purchase with a refund, a refund still waiting for its purchase, the Stripe webhook with a secret, and
    a received Stripe event."""
    from datetime import UTC, datetime

    from tenants.models import PurchaseSource, StripeEvent
    from tenants.purchases.service import Buyer, Order, record_purchase, record_refund, refund_purchase
    from tenants.purchases.stripe_webhooks import set_signing_secret

    recorded = record_purchase(
        session,
        Order(
            source=PurchaseSource.API,
            external_id=f"seed-{uuid4().hex[:8]}",
            amount=5000,
            currency="USD",
            buyer=Buyer(email=f"buyer-{uuid4().hex[:8]}@example.com"),
            references=[f"pi_seed_{uuid4().hex[:8]}"],
        ),
    )
    refund_purchase(session, recorded.purchase.id, amount=1000)
    record_refund(
        session,
        source=PurchaseSource.STRIPE,
        payment_ref=f"ch_seed_{uuid4().hex[:8]}",
        external_id="re_seed",
        amount=100,
        match_refs=[f"pi_seed_{uuid4().hex[:8]}"],
        occurred_at=datetime.now(UTC),
    )
    set_signing_secret(session, "whsec_seedseedseed")
    session.add(StripeEvent(id=f"evt_seed_{uuid4().hex[:8]}", type="invoice.paid", payload={"seed": True}))


def _commissions(session: Session) -> None:
    """A purchase by a promo code that credits a partner and earns a commission, approved and on a payout, paid;
    then a refund that books a negative line for the next payout."""
    from tenants.models import CodeKind, PartnerStatus, PurchaseSource
    from tenants.partners import commissions, payouts
    from tenants.partners import service as partners
    from tenants.purchases.service import Buyer, Item, Order, record_purchase, refund_purchase

    program = partners.create_program(
        session,
        partners.ProgramSettings(name="Seed payouts", landing_url="https://seed.example/", currency="EUR", hold_days=0),
    )
    partners.set_product(session, program.id, "seed-ebook", partners.CommissionRate("percent", 3000), None)
    partner = partners.create_partner(
        session, program_id=program.id, email=f"earner-{uuid4().hex[:8]}@example.com", status=PartnerStatus.APPROVED
    )
    code = partners.create_code(session, partner_id=partner.id, code=f"promo-{uuid4().hex[:8]}", kind=CodeKind.PROMO)
    purchase = record_purchase(
        session,
        Order(
            source=PurchaseSource.API,
            external_id=f"seed-commission-{uuid4().hex[:8]}",
            amount=2000,
            currency="EUR",
            buyer=Buyer(email=f"customer-{uuid4().hex[:8]}@example.com"),
            items=[Item("seed-ebook", 1, 2000)],
            promo_code=code.code,
        ),
    ).purchase
    commissions.record_commissions(session, purchase.id)
    commissions.approve_due_commissions(session)
    (payout,) = payouts.create_payouts(session)
    payouts.mark_payout_paid(session, payout.id, f"seed-transfer-{uuid4().hex[:8]}")
    refund_purchase(session, purchase.id, amount=500)
    commissions.apply_refunds(session, purchase.id)


def _privacy(session: Session) -> None:
    """A retention policy, and a member's erasure request waiting for the tenant (nothing erased)."""
    from tenants.memberships.service import create_member, create_membership_site
    from tenants.privacy.erase import request_member_erasure
    from tenants.privacy.retention import set_policy

    set_policy(session, anonymous_visitor_months=6, identified_visit_months=None)
    site = create_membership_site(session, name="Seed privacy", registration="open")
    member = create_member(session, site_id=site.id, email=f"asks-{uuid4().hex[:8]}@example.com")
    request_member_erasure(session, member.id)


def _conversions(session: Session) -> None:
    """A Meta integration with its token, for one site."""
    from tenants.conversions.integrations import create_integration
    from tenants.models import Platform

    site = create_site(session, name="Seed ads", allowed_origins=["https://seed.example"])
    integration = create_integration(
        session,
        Platform.META,
        site_id=site.id,
        settings={"pixel_id": "1234567890"},
        secrets={"access_token": "EAAseedtoken"},
    )
    from tenants.models import Conversion, ConversionDelivery, ConversionKind

    conversion = Conversion(
        kind=ConversionKind.CUSTOM,
        event_name="seed",
        source_key=f"seed:{uuid4()}",
        event_id=uuid4().hex,
        site_id=site.id,
    )
    session.add(conversion)
    session.flush()
    session.add(ConversionDelivery(integration_id=integration.id, conversion_id=conversion.id))
    from tenants.conversions.consent import record_privacy_signal, set_ads_consent
    from tenants.models import ConsentSource, PrivacySignal

    set_ads_consent(session, new_id(), True, ConsentSource.API)
    record_privacy_signal(session, new_id(), PrivacySignal.GPC)


def _retractions(session: Session) -> None:
    """An erased person's Google Ads conversion waiting to be retracted."""
    from tenants.conversions.integrations import create_integration
    from tenants.models import Contact, ConversionRetraction, Erasure, ErasureStatus, Platform, utcnow

    contact = Contact(email=f"erased-{uuid4().hex}@erased.invalid", erased_at=utcnow())
    session.add(contact)
    session.flush()
    erasure = Erasure(contact_id=contact.id, status=ErasureStatus.DONE, requested_via="api", requested_by="seed")
    google = create_integration(
        session,
        Platform.GOOGLE_ADS,
        settings={"customer_id": "1234567890", "conversion_actions": {"lead": "111"}},
        secrets={"refresh_token": "1//seed-refresh-token"},
        events=dict.fromkeys(("lead", "purchase", "complete_registration"), False),
    )
    session.add(erasure)
    session.flush()
    session.add(
        ConversionRetraction(
            erasure_id=erasure.id,
            integration_id=google.id,
            conversion_action="customers/1234567890/conversionActions/111",
            order_id=uuid4().hex,
        )
    )
    session.flush()


SEEDED_BY_SIGNUP = {"tenants", "tenant_users", "api_keys"}
APPEND_ONLY = {"identity_events", "audit_log"}
"""The app role may only insert and read these (audit logs)."""
SEEDERS: dict[str, Callable[[Session], None]] = {
    "outbox": _outbox,
    "sites": _tracking,
    "visitors": _tracking,
    "visits": _tracking,
    "contact_fields": _identity,
    "contacts": _identity,
    "forms": _identity,
    "form_submissions": _identity,
    "email_links": _identity,
    "link_clicks": _identity,
    "identity_events": _identity,
    "membership_sites": _memberships,
    "members": _memberships,
    "pages": _memberships,
    "audit_log": _audit,
    "erasures": _privacy,
    "privacy_settings": _privacy,
    "cookieless_counted_hits": _cookieless,
    # Ingest adds the visit to every traffic rollup table; a new contact counts in every contact rollup table.
    **{shape.traffic_table: _tracking for shape in KEPT_SHAPES},
    **{shape.contact_table: _identity for shape in KEPT_SHAPES},
    "purchases": _purchases,
    "purchase_references": _purchases,
    "purchase_refunds": _purchases,
    "purchase_rollups": _purchases,  # the trigger counts each purchase
    "stripe_webhooks": _purchases,
    "stripe_events": _purchases,
    "programs": _partners,
    "program_products": _partners,
    "partners": _partners,
    "partner_accounts": _partners,
    "partner_codes": _partners,
    "referral_clicks": _partners,
    "contact_referrers": _partners,
    "referral_rollups": _partners,  # kept by triggers on the two above
    "purchase_credits": _commissions,
    "commissions": _commissions,
    "payouts": _commissions,
    "partner_sale_rollups": _commissions,  # kept by triggers on credits, commissions and purchases
    "integrations": _conversions,
    "visitor_consents": _conversions,
    "conversions": _conversions,
    "conversion_deliveries": _conversions,
    "conversion_retractions": _retractions,
}
