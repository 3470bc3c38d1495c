"""A tenant with a week and a half of traffic for the report tests: browsers' journeys over several days, sources
and session gaps sent through the real collect endpoint, a crawler's hits, and four browsers that become contacts
through a form — the same data whether a test drives the app in-process (Litestar's TestClient) or a live server
(an ``httpx.Client`` with its ``base_url``)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from tenants.isolation import tenant_session
from tests.conftest import SiteHandle, TenantHandle, make_site, token_after, wait_stored, wait_until

__all__ = [
    "BASE",
    "BROWSER",
    "CRAWLER",
    "ORIGIN",
    "SIGNED_UP",
    "TODAY",
    "SeededReports",
    "hit",
    "journeys",
    "seed_reports",
    "send",
]

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
CRAWLER = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
TODAY = datetime.now(UTC).date()
BASE = datetime.combine(TODAY - timedelta(days=8), datetime.min.time(), UTC) + timedelta(hours=9)
"""The first journey's first hit: eight days ago, 09:00 UTC."""
SIGNED_UP = (0, 1, 2, 4)
"""The journeys whose browser fills in the form (each becomes a contact)."""


def hit(at: datetime, path: str = "/", **fields: Any) -> dict[str, Any]:
    """One tracker hit on ``ORIGIN`` at ``at``, with a fresh hit id."""
    return {
        "hit_id": str(uuid.uuid4()),
        "ts": int(at.timestamp() * 1000),
        "url": f"{ORIGIN}{path}",
        "path": path,
        **fields,
    }


def send(
    http: httpx.Client, site: SiteHandle, hits: list[dict[str, Any]], token: str | None, agent: str = BROWSER
) -> tuple[str, bytes]:
    """Post a batch as tracker.js does; the browser's visitor token after it (none for a crawler) and the body."""
    body = json.dumps({"v": 1, "token": token, "hits": hits}).encode()
    headers = {"Origin": ORIGIN, "User-Agent": agent, "Content-Type": "text/plain;charset=UTF-8"}
    answer = http.post(f"/collect/{site.site_key}", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    return (token_after(answer, token) if agent == BROWSER else ""), body


def journeys() -> list[list[tuple[timedelta, str, dict[str, Any]]]]:
    """Browsers' hits: (offset from BASE, path, hit fields). Several days, sources and session gaps."""
    day, minute = timedelta(days=1), timedelta(minutes=1)
    google = {"referrer": "https://www.google.com/"}
    mail = {"utm": {"source": "newsletter", "medium": "email", "campaign": "spring"}}
    paid = {"utm": {"source": "facebook", "medium": "cpc", "campaign": "launch"}, "click_ids": {"fbclid": "F1"}}
    return [
        [(0 * day, "/", google), (10 * minute, "/pricing", {}), (2 * 60 * minute, "/", {}), (2 * day, "/a", mail)],
        [(1 * day, "/launch", paid), (1 * day + 5 * minute, "/launch", {"type": "event", "event_name": "signup"})],
        [(3 * day, "/", {}), (3 * day + 40 * minute, "/blog", {"referrer": "https://news.example/top"})],
        [
            (3 * day, "/", {"partner_code": "ACME"}),
            (4 * day, "/", {"utm": {"source": "google", "medium": "cpc"}, "click_ids": {"gclid": "G1"}}),
        ],
        [(5 * day, "/offer", mail), (5 * day + 1 * minute, "/offer/2", {})],
        [(6 * day, "/", google)],
        [(7 * day, "/", mail)],
    ]


@dataclass
class SeededReports:
    tenant: TenantHandle
    site: SiteHandle
    other_site: SiteHandle
    """A second site of the tenant, with no seeded traffic."""
    visits: int
    """Visits stored so far (a test that sends more adds to it)."""
    resend: bytes
    """The first batch sent, to send again."""
    contact_ids: list[str]
    """The contacts the form made, newest first."""


def _touched_contacts(tenant: TenantHandle) -> int:
    with tenant_session(tenant.tenant_id) as session:
        return int(session.execute(text("SELECT count(*) FROM contacts WHERE first_touch IS NOT NULL")).scalar() or 0)


def seed_reports(http: httpx.Client, tenant: TenantHandle) -> SeededReports:
    """Send :func:`journeys` and two crawler hits to a new site of ``tenant``, wait until ingest stored them, and
    let the browsers of :data:`SIGNED_UP` fill in a form; returns once their contacts carry their touches. Needs
    the pipeline (a Celery worker and beat) running."""
    site, other_site = make_site(tenant, [ORIGIN]), make_site(tenant, [ORIGIN])
    form = http.post(
        "/api/v1/forms",
        json={
            "site_id": str(site.site_id),
            "name": "Signup",
            "min_fill_seconds": 1,
            "fields": [{"name": "email", "maps_to": "email", "type": "email"}],
        },
        headers=tenant.headers,
    ).json()
    sent, resend, tokens = 0, b"", []
    for journey in journeys():
        token: str | None = None
        for offset, path, fields in journey:
            token, body = send(http, site, [hit(BASE + offset, path, **fields)], token)
            resend, sent = resend or body, sent + 1
        tokens.append(token)
    crawl = [hit(BASE + timedelta(days=2), "/robots"), hit(BASE + timedelta(days=2, hours=1))]
    send(http, site, crawl, None, CRAWLER)
    sent += len(crawl)
    wait_stored(tenant.tenant_id, sent)
    for number in SIGNED_UP:
        answer = http.post(
            f"/f/{form['form_key']}",
            data={
                "tm_started": str(int(time.time() * 1000) - 5000),
                "tm_token": tokens[number],
                "email": f"person{number}@example.com",
            },
            headers={"Origin": ORIGIN, "User-Agent": BROWSER, "Accept": "application/json"},
        )
        assert answer.status_code == 200, answer.text
    wait_until(lambda: _touched_contacts(tenant) == len(SIGNED_UP), 30, "the contacts' touches from their visits")
    contacts = http.get("/api/v1/contacts", headers=tenant.headers).json()["items"]
    return SeededReports(tenant, site, other_site, sent, resend, [c["id"] for c in contacts])
