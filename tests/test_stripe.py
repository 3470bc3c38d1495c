"""Stripe webhooks: a tenant connects its Stripe account's endpoint, and each paid checkout, renewal and refund
lands once on the right contact, however Stripe delivers it (twice, concurrently, late, out of order), while
nothing forged or replayed is ever accepted."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tenants.isolation import tenant_session
from tests.conftest import LiveServer, TenantHandle, wait_until
from tests.support import stripe as fake_stripe

SECRET = "whsec_" + "t3st" * 8


@dataclass
class Shop:
    """A tenant whose Stripe webhook endpoint is connected."""

    tenant: TenantHandle
    hook_path: str


@pytest.fixture
def connect_shop(client: Any, make_tenant: Callable[..., TenantHandle]) -> Callable[[str], Shop]:
    def connect(name: str) -> Shop:
        tenant = make_tenant(name)
        answer = client.put("/api/v1/integrations/stripe", json={"signing_secret": SECRET}, headers=tenant.headers)
        assert answer.status_code == 200, answer.text
        url = answer.json()["webhook_url"]
        return Shop(tenant, "/hooks/" + url.split("/hooks/", 1)[1])

    return connect


def deliver(base_url: str, shop: Shop, event: dict[str, Any]) -> httpx.Response:
    body, headers = fake_stripe.signed_delivery(event, SECRET)
    return httpx.post(f"{base_url}{shop.hook_path}", content=body, headers=headers, timeout=30)


def outcome(shop: Shop, event_id: str, timeout: float = 60) -> str:
    """The stored outcome of an event, once the worker processed it."""

    def processed() -> str | None:
        with tenant_session(shop.tenant.tenant_id) as session:
            return session.execute(
                text("SELECT outcome FROM stripe_events WHERE id = :id AND processed_at IS NOT NULL"), {"id": event_id}
            ).scalar()

    return str(wait_until(processed, timeout, f"the worker to process {event_id}", interval=0.1))


def purchases(shop: Shop) -> list[dict[str, Any]]:
    with tenant_session(shop.tenant.tenant_id) as session:
        rows = session.execute(text("SELECT p.*, c.email FROM purchases p JOIN contacts c ON c.id = p.contact_id"))
        return [dict(row._mapping) for row in rows]


def test_connecting_stripe_shows_the_url_and_never_the_secret(client: Any, make_tenant: Callable[..., Any]) -> None:
    """The tenant pastes the URL into Stripe, then stores the signing secret; no answer ever shows it again and
    the database holds only ciphertext."""
    tenant = make_tenant("Stripeconnect")
    before = client.get("/api/v1/integrations/stripe", headers=tenant.headers).json()
    assert before["signing_secret_set"] is False
    assert before["webhook_url"].startswith("http") and "/hooks/stripe/" in before["webhook_url"]
    assert "charge.refunded" in before["events"] and "invoice.paid" in before["events"]
    refused = client.put("/api/v1/integrations/stripe", json={"signing_secret": "nope"}, headers=tenant.headers)
    assert refused.status_code == 422
    stored = client.put("/api/v1/integrations/stripe", json={"signing_secret": SECRET}, headers=tenant.headers)
    assert stored.status_code == 200 and SECRET not in stored.text
    after = client.get("/api/v1/integrations/stripe", headers=tenant.headers)
    assert after.json()["signing_secret_set"] is True and SECRET not in after.text
    assert after.json()["webhook_url"] == before["webhook_url"]  # the URL pasted into Stripe stays valid
    with tenant_session(tenant.tenant_id) as session:
        ciphertext = session.execute(text("SELECT signing_secret FROM stripe_webhooks")).scalar()
    assert ciphertext and SECRET.encode() not in bytes(ciphertext)


def test_the_same_event_ten_times_at_once_and_again_later_is_one_purchase(
    api_server: LiveServer, worker: subprocess.Popen[bytes], connect_shop: Callable[[str], Shop]
) -> None:
    shop = connect_shop("Stripeten")
    event = fake_stripe.checkout_completed(
        session_id=f"cs_test_{uuid.uuid4().hex}", payment_intent="pi_ten", amount_total=4900, tax=400,
        email="monica@example.com",
    )  # fmt: skip
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: deliver(api_server.base_url, shop, event), range(10)))
    assert [a.status_code for a in answers] == [200] * 10
    assert sum(not a.json()["duplicate"] for a in answers) == 1
    assert outcome(shop, event["id"]).startswith("recorded")
    time.sleep(1)  # a redelivery days later, in short
    late = deliver(api_server.base_url, shop, event)
    assert late.status_code == 200 and late.json()["duplicate"] is True
    (purchase,) = purchases(shop)
    assert (purchase["amount"], purchase["tax"], purchase["currency"]) == (4900, 400, "USD")
    assert purchase["email"] == "monica@example.com" and purchase["new_customer"] is True


def test_the_visitor_token_passed_to_checkout_names_the_buyer(
    api_server: LiveServer, worker: subprocess.Popen[bytes], connect_shop: Callable[[str], Shop]
) -> None:
    """Monica is identified on her laptop; she pays with another email: the purchase is still hers, with the
    browser it came from."""
    from tenants.contacts.service import ContactChanges, upsert_by_email
    from tenants.identity.service import link_visitor
    from tenants.models import Evidence, new_id
    from tenants.security.tokens import get_signer
    from tenants.tracking.visitors import VISITOR_PURPOSE

    shop = connect_shop("Stripevisitor")
    laptop = new_id()
    with tenant_session(shop.tenant.tenant_id) as session:
        monica, _ = upsert_by_email(session, ContactChanges(email="monica@shop.example"))
        link_visitor(session, visitor_id=laptop, contact_id=monica.id, evidence=Evidence.EMAIL_CLICK)
    token = get_signer().sign(VISITOR_PURPOSE, shop.tenant.tenant_id, laptop)
    event = fake_stripe.checkout_completed(
        session_id=f"cs_test_{uuid.uuid4().hex}", amount_total=1000, email="m.work@corp.example",
        client_reference_id=token,
    )  # fmt: skip
    assert deliver(api_server.base_url, shop, event).status_code == 200
    assert outcome(shop, event["id"]).startswith("recorded")
    (purchase,) = purchases(shop)
    assert (purchase["contact_id"], purchase["visitor_id"]) == (monica.id, laptop)


def test_an_unpaid_checkout_is_no_purchase(
    api_server: LiveServer, worker: subprocess.Popen[bytes], connect_shop: Callable[[str], Shop]
) -> None:
    shop = connect_shop("Stripeunpaid")
    event = fake_stripe.checkout_completed(
        session_id="cs_unpaid", amount_total=1000, email="a@example.com", payment_status="unpaid"
    )
    assert deliver(api_server.base_url, shop, event).status_code == 200
    assert outcome(shop, event["id"]).startswith("ignored")
    assert purchases(shop) == []


def test_the_same_order_by_webhook_and_by_rest_is_one_purchase(
    client: Any, api_server: LiveServer, worker: subprocess.Popen[bytes], connect_shop: Callable[[str], Shop]
) -> None:
    """The shop's server reports the Checkout Session it created (source stripe, the session id as external
    id) and Stripe's webhook reports it too, in either order."""
    shop = connect_shop("Stripeboth")
    for first in ("rest", "webhook"):
        session_id = f"cs_test_{first}_{uuid.uuid4().hex[:8]}"
        event = fake_stripe.checkout_completed(session_id=session_id, amount_total=2500, email="both@example.com")
        rest = {"source": "stripe", "external_id": session_id, "amount": 2500, "currency": "usd",
                "email": "both@example.com"}  # fmt: skip
        if first == "rest":
            assert client.post("/api/v1/purchases", json=rest, headers=shop.tenant.headers).status_code == 201
            assert deliver(api_server.base_url, shop, event).status_code == 200
            assert outcome(shop, event["id"]).startswith("already recorded")
        else:
            assert deliver(api_server.base_url, shop, event).status_code == 200
            assert outcome(shop, event["id"]).startswith("recorded")
            again = client.post("/api/v1/purchases", json=rest, headers=shop.tenant.headers)
            assert again.status_code == 200, again.text
    assert len(purchases(shop)) == 2  # one per order


def _refund_story(base_url: str, shop: Shop, order: str, refund_first: bool) -> dict[str, Any]:
    """A 10,000 checkout refunded 3,000 then 1,000 more (cumulative 4,000), delivered in one of two orders,
    the older refund event last."""
    paid = fake_stripe.checkout_completed(
        session_id=f"cs_{order}", payment_intent=f"pi_{order}", amount_total=10_000, email=f"{order}@example.com"
    )
    first = fake_stripe.charge_refunded(
        charge_id=f"ch_{order}", payment_intent=f"pi_{order}", amount=10_000, amount_refunded=3000
    )
    second = fake_stripe.charge_refunded(
        charge_id=f"ch_{order}", payment_intent=f"pi_{order}", amount=10_000, amount_refunded=4000
    )
    sequence = [second, first, paid] if refund_first else [paid, first, second]
    for event in sequence:
        assert deliver(base_url, shop, event).status_code == 200
        outcome(shop, event["id"])
    assert deliver(base_url, shop, second).json()["duplicate"] is True
    (purchase,) = [p for p in purchases(shop) if p["external_id"] == f"cs_{order}"]
    return purchase


def test_a_refund_before_its_payment_ends_as_in_order(
    api_server: LiveServer, worker: subprocess.Popen[bytes], connect_shop: Callable[[str], Shop]
) -> None:
    shop = connect_shop("Stripeorder")
    in_order = _refund_story(api_server.base_url, shop, "inorder", refund_first=False)
    refund_first = _refund_story(api_server.base_url, shop, "refundfirst", refund_first=True)
    for purchase in (in_order, refund_first):
        assert (purchase["status"], purchase["refunded_amount"]) == ("partially_refunded", 4000)
    with tenant_session(shop.tenant.tenant_id) as session:
        waiting = session.execute(text("SELECT count(*) FROM purchase_refunds WHERE purchase_id IS NULL")).scalar()
        assert waiting == 0
    full = fake_stripe.charge_refunded(
        charge_id="ch_inorder", payment_intent="pi_inorder", amount=10_000, amount_refunded=10_000
    )
    deliver(api_server.base_url, shop, full)
    outcome(shop, full["id"])
    (purchase,) = [p for p in purchases(shop) if p["external_id"] == "cs_inorder"]
    assert (purchase["status"], purchase["refunded_amount"]) == ("refunded", 10_000)


def test_renewals_are_purchases_of_the_subscription_and_its_first_invoice_is_its_checkout(
    api_server: LiveServer, worker: subprocess.Popen[bytes], connect_shop: Callable[[str], Shop]
) -> None:
    shop = connect_shop("Stripesubs")
    checkout = fake_stripe.checkout_completed(
        session_id="cs_sub", amount_total=2000, email="sub@example.com", mode="subscription",
        subscription="sub_1", invoice="in_first",
    )  # fmt: skip
    first_invoice = fake_stripe.invoice_paid(
        invoice_id="in_first", amount_paid=2000, email="sub@example.com", subscription="sub_1",
        billing_reason="subscription_create",
    )  # fmt: skip
    renewal = fake_stripe.invoice_paid(
        invoice_id="in_second", amount_paid=2000, email="sub@example.com", subscription="sub_1", product="prod_pro"
    )
    for event in (first_invoice, checkout, renewal):
        assert deliver(api_server.base_url, shop, event).status_code == 200
        outcome(shop, event["id"])
    rows = sorted(purchases(shop), key=lambda p: p["created_at"])
    assert [p["external_id"] for p in rows] == ["in_first", "in_second"]
    assert [p["subscription_id"] for p in rows] == ["sub_1", "sub_1"]
    assert [p["new_customer"] for p in rows] == [True, False]
    assert rows[1]["items"] == [{"product": "prod_pro", "name": "1 x Pro plan", "quantity": 1, "unit_amount": 2000}]


def test_a_thousand_forged_or_stale_signatures_are_all_refused(
    client: Any, connect_shop: Callable[[str], Shop]
) -> None:
    """Wrong secret, a replay older than 300 s, a signature from the future, a body changed after signing, no
    header, garbage: each is a 400 with the reason, and nothing is stored."""
    shop = connect_shop("Stripeforged")
    now = int(time.time())
    refused = 0
    for i in range(1000):
        event = fake_stripe.checkout_completed(session_id=f"cs_forged_{i}", amount_total=100, email="x@example.com")
        body, headers = fake_stripe.signed_delivery(event, SECRET)
        kind = i % 6
        if kind == 0:
            _, headers = fake_stripe.signed_delivery(event, "whsec_" + "wrong" * 6)
        elif kind == 1:
            _, headers = fake_stripe.signed_delivery(event, SECRET, timestamp=now - 301 - i)
        elif kind == 2:
            _, headers = fake_stripe.signed_delivery(event, SECRET, timestamp=now + 400 + i)
        elif kind == 3:
            body = body.replace(b'"amount_total":100', b'"amount_total":1')
        elif kind == 4:
            headers.pop("Stripe-Signature")
        else:
            headers["Stripe-Signature"] = f"t={now},v1={'0' * 64}"
        answer = client.post(shop.hook_path, content=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"]
        refused += 1
    assert refused == 1000
    with tenant_session(shop.tenant.tenant_id) as session:
        assert session.execute(text("SELECT count(*) FROM stripe_events")).scalar() == 0
    # The genuine one still goes through, and an unknown endpoint is a 404.
    body, headers = fake_stripe.signed_delivery(fake_stripe.checkout_completed(
        session_id="cs_real", amount_total=100, email="x@example.com"), SECRET)  # fmt: skip
    assert client.post(shop.hook_path, content=body, headers=headers).status_code == 200
    assert client.post("/hooks/stripe/nosuchendpoint", content=body, headers=headers).status_code == 404


def test_a_new_signing_secret_is_used_at_once_by_a_server_that_remembered_the_old_one(
    client: Any, api_server: LiveServer, connect_shop: Callable[[str], Shop]
) -> None:
    """The API keeps each endpoint's secret in memory; a tenant who rolls the secret in Stripe and stores the new
    one (here through another process) loses no delivery signed with it."""
    shop = connect_shop("Striperoll")
    first = fake_stripe.checkout_completed(session_id="cs_roll_1", amount_total=1000, email="a@example.com")
    assert deliver(api_server.base_url, shop, first).status_code == 200  # the server now remembers SECRET
    rolled = "whsec_" + "r0ll" * 8
    stored = client.put("/api/v1/integrations/stripe", json={"signing_secret": rolled}, headers=shop.tenant.headers)
    assert stored.status_code == 200
    second = fake_stripe.checkout_completed(session_id="cs_roll_2", amount_total=1000, email="a@example.com")
    body, headers = fake_stripe.signed_delivery(second, rolled)
    answer = httpx.post(f"{api_server.base_url}{shop.hook_path}", content=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    forged = fake_stripe.checkout_completed(session_id="cs_roll_3", amount_total=1000, email="a@example.com")
    body, headers = fake_stripe.signed_delivery(forged, "whsec_" + "n0pe" * 8)
    refused = httpx.post(f"{api_server.base_url}{shop.hook_path}", content=body, headers=headers, timeout=30)
    assert refused.status_code == 400 and "does not verify" in refused.text


def test_a_delivery_whose_drain_never_started_is_processed_by_beats_drain_once(
    api_server: LiveServer, worker: subprocess.Popen[bytes], connect_shop: Callable[[str], Shop]
) -> None:
    """The stored event is the queue: when no drain follows its delivery (another delivery's nudge window was
    open and that drain had finished, or the nudge was lost), beat's periodic drain processes it, and a second
    drain changes nothing."""
    from tenants.purchases.stripe_webhooks import NUDGE_KEY
    from tenants.redis_store import get_redis
    from workers.app import celery_app
    from workers.purchases import DRAIN_ALL_TASK, drain_all_stripe_events

    assert DRAIN_ALL_TASK in {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    shop = connect_shop("Stripebeat")
    get_redis().set(NUDGE_KEY.format(tenant_id=shop.tenant.tenant_id), 1, px=600_000)  # this delivery nudges nothing
    event = fake_stripe.checkout_completed(session_id=f"cs_beat_{uuid.uuid4().hex}", amount_total=2500,
                                           email="beat@example.com")  # fmt: skip
    answer = deliver(api_server.base_url, shop, event)
    assert answer.status_code == 200 and answer.json()["duplicate"] is False
    with tenant_session(shop.tenant.tenant_id) as session:
        pending = session.execute(text("SELECT processed_at FROM stripe_events WHERE id = :id"), {"id": event["id"]})
        assert pending.one() == (None,)  # stored, and no drain was published for it
    drain_all_stripe_events.delay()  # what beat sends every second, run by the real worker
    first = outcome(shop, event["id"])
    assert first.startswith("recorded")
    deliver(api_server.base_url, shop, event)  # Stripe's retry of it, too
    drain_all_stripe_events.apply()  # and a drain in this process: nothing is pending any more
    assert outcome(shop, event["id"]) == first
    (purchase,) = purchases(shop)
    assert purchase["amount"] == 2500 and purchase["email"] == "beat@example.com"
