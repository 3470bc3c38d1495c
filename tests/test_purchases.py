"""Purchases through the REST API: a shop's server reports each sale once, refunds it fully or in part, and
sees it on the contact (timeline, totals) and in the revenue rollups; another tenant sees none of it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tenants.isolation import tenant_session
from tests.conftest import TenantHandle

ORDER = {"external_id": "order-1001", "amount": 5000, "tax": 500, "currency": "eur", "email": "ana@example.com"}


def test_the_same_order_twice_is_one_purchase(client: Any, make_tenant: Callable[..., TenantHandle]) -> None:
    tenant = make_tenant("Purchaseonce")
    first = client.post("/api/v1/purchases", json=ORDER, headers=tenant.headers)
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["currency"], body["status"], body["new_customer"], body["source"]) == ("EUR", "paid", True, "api")
    again = client.post("/api/v1/purchases", json=ORDER, headers=tenant.headers)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    changed = client.post("/api/v1/purchases", json={**ORDER, "amount": 4000}, headers=tenant.headers)
    assert changed.status_code == 409 and "5000 EUR" in changed.json()["detail"]
    second = client.post(
        "/api/v1/purchases", json={**ORDER, "external_id": "order-1002", "items": [{"product": "sku-1"}]},
        headers=tenant.headers,
    )  # fmt: skip
    assert second.status_code == 201 and second.json()["new_customer"] is False
    assert second.json()["contact_id"] == body["contact_id"]
    assert second.json()["items"] == [{"product": "sku-1", "name": None, "quantity": 1, "unit_amount": 0}]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "EU"}, "currency"),
        ({"tax": 6000}, "tax"),
        ({"amount": -1}, "amount"),
        ({"email": None}, "email"),
        ({"contact_id": "01a23445-0000-7000-8000-000000000000", "email": None}, "contact_id"),
        ({"external_id": "has space"}, "external_id"),
        ({"items": [{"product": "x", "quantity": 0}]}, "items[0].quantity"),
    ],
)
def test_a_bad_order_is_refused_with_its_reason(
    client: Any, make_tenant: Callable[..., TenantHandle], change: dict[str, Any], field: str
) -> None:
    tenant = make_tenant("Purchasebad")
    answer = client.post("/api/v1/purchases", json={**ORDER, **change}, headers=tenant.headers)
    assert answer.status_code in (400, 422), answer.text
    assert field in {e["field"] for e in answer.json()["errors"]}


def test_the_same_order_at_once_from_many_threads_is_one_purchase(make_tenant: Callable[..., TenantHandle]) -> None:
    from tenants.models import PurchaseSource
    from tenants.purchases.service import Buyer, Order, record_purchase

    tenant = make_tenant("Purchaserace")
    barrier = threading.Barrier(10)

    def record(_: int) -> bool:
        barrier.wait()
        with tenant_session(tenant.tenant_id) as session:
            order = Order(PurchaseSource.API, "race-1", 999, "USD", Buyer(email="race@example.com"))
            return record_purchase(session, order).created

    with ThreadPoolExecutor(10) as pool:
        created = list(pool.map(record, range(10)))
    assert created.count(True) == 1
    with tenant_session(tenant.tenant_id) as session:
        assert session.execute(text("SELECT count(*) FROM purchases")).scalar() == 1
        assert session.execute(text("SELECT count(*) FROM contacts")).scalar() == 1


def test_partial_then_full_refund_follows_the_status_and_never_goes_below_zero(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Purchaserefund")
    purchase = client.post("/api/v1/purchases", json=ORDER, headers=tenant.headers).json()
    refunds = f"/api/v1/purchases/{purchase['id']}/refunds"
    partial = client.post(refunds, json={"amount": 2000, "refund_id": "r-1"}, headers=tenant.headers)
    assert partial.status_code == 201, partial.text
    assert (partial.json()["status"], partial.json()["refunded_amount"]) == ("partially_refunded", 2000)
    repeat = client.post(refunds, json={"amount": 2000, "refund_id": "r-1"}, headers=tenant.headers)
    assert repeat.status_code == 200 and repeat.json()["refunded_amount"] == 2000
    too_much = client.post(refunds, json={"amount": 3001}, headers=tenant.headers)
    assert too_much.status_code == 422 and too_much.json()["errors"][0]["message"] == "must be at most 3000"
    rest = client.post(refunds, json={}, headers=tenant.headers)
    assert (rest.json()["status"], rest.json()["refunded_amount"]) == ("refunded", 5000)
    assert [r["amount"] for r in rest.json()["refunds"]] == [2000, 3000]
    assert client.post(refunds, json={}, headers=tenant.headers).status_code == 422
    got = client.get(f"/api/v1/purchases/{purchase['id']}", headers=tenant.headers).json()
    assert got["refunded_amount"] == 5000 and len(got["refunds"]) == 2


def test_purchases_show_in_the_timeline_the_list_and_the_dashboard(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    from tests.support.dashboard import PASSWORD, csrf_of

    tenant = make_tenant("Purchasetimeline")
    bought = client.post("/api/v1/purchases", json=ORDER, headers=tenant.headers).json()
    client.post("/api/v1/purchases", json={**ORDER, "external_id": "o-2", "amount": 1000, "tax": 0},
                headers=tenant.headers)  # fmt: skip
    contact_id = bought["contact_id"]
    timeline = client.get(f"/api/v1/contacts/{contact_id}/timeline", headers=tenant.headers).json()["items"]
    entries = [e for e in timeline if e["kind"] == "purchase"]
    assert [e["external_id"] for e in entries] == ["o-2", "order-1001"]
    assert entries[1]["amount"] == 5000 and entries[1]["currency"] == "EUR"
    page = client.get(f"/api/v1/purchases?contact_id={contact_id}&limit=1", headers=tenant.headers).json()
    assert [p["external_id"] for p in page["items"]] == ["o-2"]
    older = client.get(f"/api/v1/purchases?cursor={page['next_cursor']}", headers=tenant.headers).json()
    assert [p["external_id"] for p in older["items"]] == ["order-1001"] and older["next_cursor"] is None
    assert client.get("/api/v1/purchases?cursor=bogus", headers=tenant.headers).status_code == 422

    token = csrf_of(client.get("/app/login").text)
    login = {"csrf": token, "workspace": tenant.slug, "email": tenant.owner_email, "password": PASSWORD}
    assert client.post("/app/login", data=login, follow_redirects=False).status_code == 303
    contact_page = client.get(f"/app/contacts/{contact_id}").text
    assert "2 purchases, 60.00 EUR net of refunds" in contact_page
    assert 'data-kind="purchase"' in contact_page
    listing = client.get("/app/contacts").text
    assert '<td class="num purchases">2</td>' in listing and "60.00 EUR" in listing


def test_revenue_rollups_equal_a_scan_through_refunds_and_merges(
    client: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    from tenants.reports.rollups import compare_purchase_rollups, rebuild_purchase_rollups

    tenant = make_tenant("Purchaserollups")
    today = datetime.now(UTC)
    ids = []
    for n, (email, amount, currency, days_ago) in enumerate(
        [("a@example.com", 1000, "USD", 0), ("a@example.com", 2000, "USD", 1), ("b@example.com", 700, "EUR", 0)]
    ):
        body = {"external_id": f"r-{n}", "amount": amount, "currency": currency, "email": email,
                "occurred_at": (today - timedelta(days=days_ago)).isoformat()}  # fmt: skip
        ids.append(client.post("/api/v1/purchases", json=body, headers=tenant.headers).json()["id"])
    client.post(f"/api/v1/purchases/{ids[0]}/refunds", json={"amount": 400}, headers=tenant.headers)
    a, b = (client.get(f"/api/v1/purchases/{i}", headers=tenant.headers).json()["contact_id"] for i in ids[1:])
    client.post(f"/api/v1/contacts/{a}/merge", json={"other_contact_id": b}, headers=tenant.headers)
    start, end = (today - timedelta(days=2)).date(), today.date()
    with tenant_session(tenant.tenant_id) as session:
        assert compare_purchase_rollups(session, start, end) == []
        stored = session.execute(
            text("""SELECT currency, sum(purchases), sum(revenue), sum(new_customers) FROM purchase_rollups
                    WHERE touch = 'first' GROUP BY currency ORDER BY currency""")
        ).all()
        assert [tuple(row) for row in stored] == [("EUR", 1, 700, 1), ("USD", 2, 2600, 1)]
        session.execute(text("UPDATE purchase_rollups SET revenue = revenue + 1"))  # a drift the check finds
        assert compare_purchase_rollups(session, start, end)
        rebuild_purchase_rollups(session, start, end)
        assert compare_purchase_rollups(session, start, end) == []


def test_another_tenants_purchase_is_not_found(client: Any, make_tenant: Callable[..., TenantHandle]) -> None:
    a, b = make_tenant("Purchasealpha"), make_tenant("Purchasebravo")
    purchase = client.post("/api/v1/purchases", json=ORDER, headers=a.headers).json()
    assert client.get(f"/api/v1/purchases/{purchase['id']}", headers=b.headers).status_code == 404
    refund = client.post(f"/api/v1/purchases/{purchase['id']}/refunds", json={}, headers=b.headers)
    assert refund.status_code == 404
    assert client.get("/api/v1/purchases", headers=b.headers).json()["items"] == []
    # B's order with the same external id is B's own purchase, not A's.
    assert client.post("/api/v1/purchases", json=ORDER, headers=b.headers).status_code == 201
    assert client.get(f"/api/v1/purchases/{purchase['id']}", headers=a.headers).json()["status"] == "paid"


def test_the_secret_key_ring_rotates_and_refuses_tampering_or_another_tenant() -> None:
    from tenants.security.secrets import SecretBox, UndecryptableSecret
    from tenants.settings import SecretKey

    old, new = SecretKey("s1", os.urandom(32)), SecretKey("s2", os.urandom(32))
    before = SecretBox((old,))
    sealed = before.encrypt(b"whsec_abc", b"stripe:tenant-a")
    assert sealed.count(b"whsec_abc") == 0
    after = SecretBox((new, old))  # rotation: a new key in front, the old one kept
    assert after.decrypt(sealed, b"stripe:tenant-a") == b"whsec_abc"
    resealed = after.encrypt(b"whsec_abc", b"stripe:tenant-a")
    assert after.key_id_of(resealed) == "s2" and after.key_id_of(sealed) == "s1"
    with pytest.raises(UndecryptableSecret):
        after.decrypt(sealed, b"stripe:tenant-b")  # copied into another tenant's row
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(UndecryptableSecret):
        after.decrypt(bytes(tampered), b"stripe:tenant-a")
    with pytest.raises(UndecryptableSecret, match="not in TRAILMARK_SECRET_KEYS"):
        SecretBox((new,)).decrypt(sealed, b"stripe:tenant-a")  # its key left the ring
    with pytest.raises(UndecryptableSecret):
        after.decrypt(b"\x09garbage", b"stripe:tenant-a")


CHECKOUT_PAGE = """<button id="buy">Buy</button>
<script>
  window.trailmark = window.trailmark || function () { (trailmark.q = trailmark.q || []).push(arguments) };
  trailmark('visitor', function (token) { window.checkoutToken = token });
</script>"""


@pytest.mark.browser
def test_the_page_hands_a_new_visitors_token_to_its_checkout(
    browser: Any, api_server: Any, make_tenant: Callable[..., TenantHandle]
) -> None:
    """A first-time visitor's page asks for the token before the tracker even loaded; it gets it once the
    browser has one, the shop passes it with the order, and the sale lands on that browser's person."""
    import httpx

    from tests.browser import DESKTOP_CHROME, tenant_web_server
    from tests.conftest import make_site

    with tenant_web_server({"/": ("Checkout", CHECKOUT_PAGE)}) as pages:
        tenant = make_tenant("Purchasebrowser")
        site = make_site(tenant, [pages.origin])
        pages.head = httpx.get(
            f"{api_server.base_url}/api/v1/sites/{site.site_id}", headers=tenant.headers, timeout=10
        ).json()["snippet"]
        context = browser.new_context(user_agent=DESKTOP_CHROME)
        try:
            page = context.new_page()
            page.goto(pages.url("/"))
            page.wait_for_function("() => !!window.checkoutToken", timeout=30_000)
            token = page.evaluate("window.checkoutToken")
            assert token == page.evaluate("trailmark('token')")
        finally:
            context.close()
    order = {**ORDER, "visitor_token": token}
    bought = httpx.post(f"{api_server.base_url}/api/v1/purchases", json=order, headers=tenant.headers, timeout=10)
    assert bought.status_code == 201, bought.text
    resolved = httpx.get(
        f"{api_server.base_url}/api/v1/resolve", params={"visitor_token": token}, headers=tenant.headers, timeout=10
    ).json()
    assert bought.json()["visitor_id"] == resolved["visitor_id"]
    assert resolved["contact_id"] == bought.json()["contact_id"]  # the browser is now that person's
