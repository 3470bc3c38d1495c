"""A shop's browser as the conversion tests play it: page views through the real collect (as tracker.js
sends them), form submissions, and the shop's tenant with a site and a form."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"

__all__ = [
    "BROWSER",
    "ORIGIN",
    "Browser",
    "Destinations",
    "GoogleSent",
    "connect_meta_and_google",
    "make_form",
    "queue_conversions",
    "send_to_google",
]


@dataclass
class Browser:
    """One browser on the shop's site: it keeps its visitor token and its first-party ad cookies."""

    client: Any
    site_key: str
    token: str | None = None
    cookies: dict[str, str] | None = None
    headers: dict[str, str] | None = None

    def view(self, path: str, **fields: Any) -> None:
        """A page view of ``path``: its UTMs and click ids read from the query, as the tracker reads them."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        hit = {
            "hit_id": str(uuid.uuid4()),
            "ts": int(time.time() * 1000),
            "url": f"{ORIGIN}{path}",
            "path": path.split("?", maxsplit=1)[0],
            "utm": {k[4:]: v for k, v in query.items() if k.startswith("utm_")},
            "click_ids": {
                k: v
                for k, v in query.items()
                if k in ("fbclid", "gclid", "gbraid", "wbraid", "ttclid", "msclkid", "li_fat_id")
            },
            "cookies": dict(self.cookies or {}),
            **fields,
        }
        body = json.dumps({"v": 1, "token": self.token, "hits": [hit]}).encode()
        headers = {"Origin": ORIGIN, "User-Agent": BROWSER, "Content-Type": "text/plain;charset=UTF-8"}
        answer = self.client.post(
            f"/collect/{self.site_key}", content=body, headers={**headers, **(self.headers or {})}
        )
        assert answer.status_code in (202, 204), answer.text
        if answer.status_code == 202 and answer.content:
            self.token = answer.json()["token"]

    def submit(self, form_key: str, values: dict[str, str]) -> Any:
        data = {"tm_started": str(int(time.time() * 1000) - 5000), **values}
        if self.token:
            data["tm_token"] = self.token
        headers = {"Origin": ORIGIN, "User-Agent": BROWSER, "Accept": "application/json", **(self.headers or {})}
        answer = self.client.post(f"/f/{form_key}", data=data, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer


@dataclass
class Destinations:
    """The shop's Meta pixel and Google Ads account as the API answered them, and their ids at the fakes."""

    meta: dict[str, Any]
    google: dict[str, Any]

    @property
    def meta_key(self) -> str:
        return f"meta:{self.meta['pixel_id']}"

    @property
    def google_key(self) -> str:
        return f"google:{self.google['customer_id']}"


def connect_meta_and_google(client: Any, headers: dict[str, str], fake: Any = None, **events: Any) -> Destinations:
    """The shop's Meta pixel and Google Ads account, both receiving leads, purchases and registrations; with
    ``fake``, the fake platforms know their tokens."""
    pixel = str(secrets.randbelow(10**12) + 10**12)
    customer = str(secrets.randbelow(9 * 10**9) + 10**9)
    meta_token, refresh = f"EAAtest{secrets.token_hex(12)}", f"1//test-{secrets.token_hex(12)}"
    if fake is not None:
        fake.meta_tokens[pixel] = meta_token
        fake.google_refresh[refresh] = customer
    meta = client.post(
        "/api/v1/integrations",
        json={"platform": "meta", "pixel_id": pixel, "access_token": meta_token, **events},
        headers=headers,
    )
    assert meta.status_code == 201, meta.text
    google = client.post(
        "/api/v1/integrations",
        json={
            "platform": "google_ads",
            "customer_id": customer,
            "conversion_actions": {
                "lead": "111",
                "purchase": "222",
                "complete_registration": "333",
                "custom": [{"event": name, "action": "444"} for name in events.get("events", {}).get("custom", [])],
            },
            "refresh_token": refresh,
            **events,
        },
        headers=headers,
    )
    assert google.status_code == 201, google.text
    return Destinations(meta.json(), google.json())


def make_form(client: Any, site_id: Any, headers: dict[str, str]) -> dict[str, Any]:
    fields = [
        {"name": "email", "maps_to": "email", "type": "email"},
        {"name": "first_name", "maps_to": "first_name", "required": False},
        {"name": "phone", "maps_to": "phone", "type": "tel", "required": False},
    ]
    body = {"site_id": str(site_id), "name": "Free guide", "fields": fields, "min_fill_seconds": 1}
    answer = client.post("/api/v1/forms", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def queue_conversions(
    tenant_id: Any,
    integration_ids: list[str],
    count: int,
    clicked_at: str = "2026-12-01T10:00:00+00:00",
    **fields: Any,
) -> list[str]:
    """``count`` custom conversions queued for the integrations, stored as the record task stores them (a
    builder for the delivery tests: a batch of 500 without 500 browsers), their click ids first seen at
    ``clicked_at``; returns their event ids."""
    from tenants.conversions.service import event_id_of
    from tenants.isolation import tenant_session
    from tenants.models import Conversion, ConversionDelivery, ConversionKind

    event_ids = []
    with tenant_session(tenant_id) as session:
        for n in range(count):
            key = f"builder:{uuid.uuid4()}"
            touches = {
                "meta": {"source": "converting_visit", "click_ids": {"fbclid": f"IwAR-{n}"}, "ad_cookies": {},
                         "clicked_at": {"fbclid": clicked_at}},
                "google_ads": {"source": "converting_visit", "click_ids": {"gclid": f"Cj0-{n}"}, "ad_cookies": {},
                               "clicked_at": {"gclid": clicked_at}},
            }  # fmt: skip
            conversion = Conversion(
                kind=ConversionKind.CUSTOM,
                event_name="webinar_signup",
                source_key=key,
                event_id=event_id_of(tenant_id, key),
                page_url=f"{ORIGIN}/webinar",
                user_agent=BROWSER,
                ip="203.0.113.0",
                touches=touches,
                **fields,
            )
            session.add(conversion)
            session.flush()
            for integration_id in integration_ids:
                session.add(ConversionDelivery(integration_id=uuid.UUID(integration_id), conversion_id=conversion.id))
            event_ids.append(conversion.event_id)
    return event_ids


@dataclass
class GoogleSent:
    """A conversion the fake Google Ads accepted: its integration, account and order id (the event id)."""

    integration_id: uuid.UUID
    customer: str
    refresh_token: str
    order_id: str

    @property
    def key(self) -> str:
        return f"google:{self.customer}"

    @property
    def adjustments_key(self) -> str:
        return f"google:{self.customer}:adjustments"


def send_to_google(tenant_id: Any, fake: Any, contact_id: Any, *, hours_ago: float = 48) -> GoogleSent:
    """A lead of ``contact_id`` from ``hours_ago``, clicked an hour earlier, uploaded to a new Google Ads
    integration of the tenant through the real sender (the one beat's flush runs), and accepted by ``fake``.
    The integration takes no new conversion of its own."""
    from datetime import timedelta

    from tenants.conversions.delivery import send_due
    from tenants.conversions.integrations import create_integration
    from tenants.conversions.service import event_id_of
    from tenants.isolation import tenant_session
    from tenants.models import Conversion, ConversionDelivery, ConversionKind, Platform, utcnow

    customer = str(secrets.randbelow(9 * 10**9) + 10**9)
    refresh = f"1//test-{secrets.token_hex(12)}"
    fake.google_refresh[refresh] = customer
    occurred = utcnow() - timedelta(hours=hours_ago)
    key = f"builder:{uuid.uuid4()}"
    with tenant_session(tenant_id) as session:
        google = create_integration(
            session,
            Platform.GOOGLE_ADS,
            settings={"customer_id": customer, "conversion_actions": {"lead": "111"}},
            secrets={"refresh_token": refresh},
            events=dict.fromkeys(("lead", "purchase", "complete_registration"), False),
        )
        clicked = (occurred - timedelta(hours=1)).isoformat()
        conversion = Conversion(
            kind=ConversionKind.LEAD, event_name="lead", source_key=key, event_id=event_id_of(tenant_id, key),
            contact_id=contact_id, occurred_at=occurred, page_url=f"{ORIGIN}/guide", user_agent=BROWSER,
            ip="203.0.113.0", touches={"google_ads": {"source": "first_touch", "click_ids": {"gclid": "Cj0-erased"},
                                                      "ad_cookies": {}, "clicked_at": {"gclid": clicked}}},
        )  # fmt: skip
        session.add(conversion)
        session.flush()
        session.add(ConversionDelivery(integration_id=google.id, conversion_id=conversion.id))
        sent = GoogleSent(google.id, customer, refresh, conversion.event_id)
    for _ in range(100):  # beat's flush, where it runs, may have taken the batch first
        send_due(tenant_id, sent.integration_id)
        if sent.order_id in fake.accepted_for(sent.key):
            return sent
        time.sleep(0.1)
    raise AssertionError("the fake Google Ads never accepted the conversion")
