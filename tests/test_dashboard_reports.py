"""The overview and attribution screens show a marketer exactly what the stored visits and contacts say: their
HTML tables are read back and compared with plain SQL scans, through the real collect → ingest pipeline."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from sqlalchemy import text

from tenants.isolation import tenant_session
from tenants.reports.dimensions import touch_dimension_sql, visit_dimension_sql
from tenants.reports.rollups import KEPT_SHAPES
from tests.conftest import LiveServer, TenantHandle, make_site, start_api_server, wait_stored
from tests.support.dashboard import check_screen, login_browser, login_http
from tests.support.reports import BROWSER, ORIGIN, TODAY, SeededReports, hit, seed_reports, send

START = TODAY - timedelta(days=9)
RANGE = {"period": "custom", "from": START.isoformat(), "to": TODAY.isoformat()}


# --- reading the screens back ---------------------------------------------------------------------------------


class Tables(HTMLParser):
    """Every table of a page as rows of cell texts, with each row's attributes and the links in its cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, Any]] = []
        self._cell: list[str] | None = None
        self._row: dict[str, Any] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "table":
            self.tables.append({"attrs": values, "rows": []})
        elif tag == "tr" and self.tables:
            self._row = {"attrs": values, "cells": [], "links": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "a" and self._row is not None and "href" in values:
            self._row["links"].append(values["href"])

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row["cells"].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1]["rows"].append(self._row)
            self._row = None


def tables_of(html: str) -> list[dict[str, Any]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def breakdown(html: str, dimension: str) -> dict[str, tuple[int, int, int]]:
    """A breakdown table as {value: (visitors, visits, new contacts)}."""
    table = next(t for t in tables_of(html) if t["attrs"].get("data-dimension") == dimension)
    return {r["cells"][0]: tuple(int(c.replace(",", "")) for c in r["cells"][1:4]) for r in table["rows"][1:]}


def cards(html: str) -> dict[str, str]:
    found = re.findall(r'<span class="label">([^<]+)</span>\s*<span class="value">([^<]+)</span>', html)
    return dict(found)


def card_changes(html: str) -> dict[str, str]:
    found = re.findall(
        r'<span class="label">([^<]+)</span>\s*<span class="value">[^<]+</span>\s*<span class="change [a-z]+">([^<]+)<',
        html,
    )
    return dict(found)


def attribution_rows(html: str) -> list[dict[str, Any]]:
    table = next(t for t in tables_of(html) if "attribution" in t["attrs"].get("class", ""))
    return table["rows"][1:]


# --- the plain scans the screens must equal -------------------------------------------------------------------


def scan_traffic(tenant: TenantHandle, start: Any, end: Any, dimension: str | None = None, **filters: str) -> Any:
    """Visitors (a visitor's first hit of a day), visits (a hit 30+ minutes after the visitor's previous one, or
    its first), by the dimension of that hit; bots left out."""
    dims = visit_dimension_sql("h")
    where = " AND ".join([f"{dims[name]} = :f_{name}" for name in filters] or ["true"])
    key = dims[dimension] if dimension else "'all'"
    statement = f"""WITH h AS (SELECT v.*, (v.occurred_at AT TIME ZONE 'UTC')::date AS day,
            lag(v.occurred_at) OVER (PARTITION BY v.visitor_id ORDER BY v.occurred_at, v.hit_id) AS prev
            FROM visits v)
        SELECT {key}, count(*) FILTER (WHERE prev IS NULL OR (prev AT TIME ZONE 'UTC')::date < day),
            count(*) FILTER (WHERE prev IS NULL OR occurred_at - prev > interval '30 minutes'),
            count(*) FILTER (WHERE prev IS NULL)
        FROM h WHERE day BETWEEN :start AND :end AND NOT is_bot AND {where} GROUP BY 1"""
    params = {"start": start, "end": end, **{f"f_{k}": v for k, v in filters.items()}}
    with tenant_session(tenant.tenant_id) as session:
        rows = session.execute(text(statement), params).all()
    return {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in rows}


def scan_contacts(
    tenant: TenantHandle, start: Any, end: Any, touch: str, dimension: str | None = None, **filters: str
) -> Any:
    """Contacts created in the range, by the dimension of their first or last touch."""
    dims = touch_dimension_sql(f"c.{touch}_touch")
    where = " AND ".join([f"{dims[name]} = :f_{name}" for name in filters] or ["true"])
    key = dims[dimension] if dimension else "'all'"
    statement = f"""SELECT {key}, count(*) FROM contacts c WHERE c.merged_into IS NULL
        AND (c.created_at AT TIME ZONE 'UTC')::date BETWEEN :start AND :end AND {where} GROUP BY 1"""
    params = {"start": start, "end": end, **{f"f_{k}": v for k, v in filters.items()}}
    with tenant_session(tenant.tenant_id) as session:
        return {row[0]: int(row[1]) for row in session.execute(text(statement), params).all()}


# --- a tenant with a week and a half of visits -----------------------------------------------------------------


@dataclass
class Seeded(SeededReports):
    server: LiveServer
    http: httpx.Client
    """A client of the live server (collect, forms, the API)."""


@pytest.fixture(scope="module")
def seeded(api_server: LiveServer, pipeline: None) -> Iterator[Seeded]:
    from tenants.accounts.service import signup

    result = signup(name="Dashreports", owner_email="owner@dashreports.example", password="correct horse battery")
    tenant = TenantHandle(result.tenant.id, result.tenant.slug, result.api_key.secret, "owner@dashreports.example")
    with httpx.Client(base_url=api_server.base_url, timeout=30) as http:
        data = seed_reports(http, tenant)
        yield Seeded(**vars(data), server=api_server, http=http)


@pytest.fixture
def staff(seeded: Seeded) -> Iterator[httpx.Client]:
    client = login_http(seeded.server.base_url, seeded.tenant.slug, seeded.tenant.owner_email)
    yield client
    client.close()


# --- the stories --------------------------------------------------------------------------------------------


def test_the_overview_shows_exactly_what_a_scan_of_the_visits_gives(seeded: Seeded, staff: httpx.Client) -> None:
    page = staff.get("/app", params=RANGE)
    assert page.status_code == 200, page.text
    totals = scan_traffic(seeded.tenant, START, TODAY)["all"]
    contacts = scan_contacts(seeded.tenant, START, TODAY, "first")["all"]
    shown = cards(page.text)
    assert (shown["Visitors"], shown["Visits"], shown["New visitors"], shown["New contacts"]) == (
        str(totals[0]),
        str(totals[1]),
        str(totals[2]),
        str(contacts),
    )
    assert shown["Conversion rate"] == f"{contacts / totals[2] * 100:.1f}%"
    for dimension in ("channel", "source", "medium", "campaign", "landing_page", "partner"):
        scanned = scan_traffic(seeded.tenant, START, TODAY, dimension)
        new_contacts = scan_contacts(seeded.tenant, START, TODAY, "first", dimension)
        expected = {value: (v, e, new_contacts.get(value, 0)) for value, (v, e, _) in scanned.items()}
        # A value with page views only (navigation inside a visit) has no row: its row would be all zeros.
        assert breakdown(page.text, dimension) == {value: row for value, row in expected.items() if any(row)}, dimension
    assert 'role="img"' in page.text and "Visitors per day as a table" in page.text


def test_the_comparison_is_with_the_period_just_before(seeded: Seeded, staff: httpx.Client) -> None:
    start, end = TODAY - timedelta(days=4), TODAY - timedelta(days=1)
    before_start, before_end = start - timedelta(days=4), start - timedelta(days=1)
    page = staff.get("/app", params={"period": "custom", "from": start.isoformat(), "to": end.isoformat()})
    now = scan_traffic(seeded.tenant, start, end).get("all", (0, 0, 0))
    before = scan_traffic(seeded.tenant, before_start, before_end).get("all", (0, 0, 0))
    assert cards(page.text)["Visits"] == str(now[1])
    ratio = (now[1] - before[1]) / before[1] * 100
    sign = "+" if ratio > 0 else "\u2212"
    expected = "no change" if round(ratio) == 0 else f"{sign}{abs(round(ratio))}%"
    assert card_changes(page.text)["Visits"] == expected
    assert f"compared with {before_start.strftime('%-d %b')}" in page.text
    quiet = staff.get(
        "/app", params={"period": "custom", "from": start.isoformat(), "to": end.isoformat(), "compare": "off"}
    )
    assert "Visits" not in card_changes(quiet.text)


def test_clicking_a_row_filters_the_whole_page_and_the_chip_removes_it(seeded: Seeded, staff: httpx.Client) -> None:
    page = staff.get("/app", params=RANGE)
    table = next(t for t in tables_of(page.text) if t["attrs"].get("data-dimension") == "channel")
    email = next(r for r in table["rows"][1:] if r["cells"][0] == "Email")
    link = email["links"][0]
    assert parse_qs(urlsplit(link).query)["channel"] == ["Email"]
    filtered = staff.get(link)
    assert filtered.status_code == 200
    totals = scan_traffic(seeded.tenant, START, TODAY, channel="Email")["all"]
    contacts = scan_contacts(seeded.tenant, START, TODAY, "first", channel="Email").get("all", 0)
    shown = cards(filtered.text)
    assert (shown["Visitors"], shown["Visits"], shown["New contacts"]) == (
        str(totals[0]),
        str(totals[1]),
        str(contacts),
    )
    assert set(breakdown(filtered.text, "channel")) == {"Email"}
    email_contacts = scan_contacts(seeded.tenant, START, TODAY, "first", "source", channel="Email")
    assert breakdown(filtered.text, "source") == {
        value: (v, e, email_contacts.get(value, 0))
        for value, (v, e, _) in scan_traffic(seeded.tenant, START, TODAY, "source", channel="Email").items()
        if v or e or email_contacts.get(value, 0)
    }
    chip = re.search(r'<li class="chip">Channel is <strong>Email</strong> <a href="([^"]+)"', filtered.text)
    assert chip, "the active filter shows as a chip"
    unfiltered = staff.get(chip.group(1).replace("&amp;", "&"))
    assert cards(unfiltered.text) == cards(page.text)


def test_attribution_by_first_and_last_touch_equals_a_scan(seeded: Seeded, staff: httpx.Client) -> None:
    for model in ("first", "last"):
        page = staff.get("/app/attribution", params={**RANGE, "model": model})
        assert page.status_code == 200, page.text
        rows = attribution_rows(page.text)
        channels = {r["attrs"]["data-value"]: r for r in rows if r["attrs"]["data-level"] == "0"}
        scanned = scan_traffic(seeded.tenant, START, TODAY, "channel")
        measure = 2 if model == "first" else 1  # first touch counts new visitors; last touch counts visits
        contacts = scan_contacts(seeded.tenant, START, TODAY, model, "channel")
        expected = {
            value: (scanned.get(value, (0, 0, 0))[measure], contacts.get(value, 0))
            for value in scanned.keys() | contacts.keys()
            if scanned.get(value, (0, 0, 0))[measure] or contacts.get(value, 0)
        }
        assert {k: (int(r["cells"][1]), int(r["cells"][2])) for k, r in channels.items()} == expected, model
        email = channels["Email"]
        assert email["cells"][5:] == ["0", "—", "—"], "no purchases yet: no customers, no revenue"
        link = parse_qs(urlsplit(email["links"][0]).query)
        assert link == {
            "touch": [model],
            "channel": ["Email"],
            "created_from": [START.isoformat()],
            "created_to": [TODAY.isoformat()],
        }
        nested = [r for r in rows if r["attrs"]["data-level"] == "3"]
        assert nested, "rows nest down to campaigns"
        spring = next(r for r in nested if r["attrs"]["data-value"] == "spring")
        assert parse_qs(urlsplit(spring["links"][0]).query)["campaign"] == ["spring"]
        assert parse_qs(urlsplit(spring["links"][0]).query)["medium"] == ["email"]
    download = staff.get("/app/attribution/csv", params={**RANGE, "model": "first"})
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(download.text)))
    contacts = scan_contacts(seeded.tenant, START, TODAY, "first")["all"]
    assert sum(int(row["new_contacts"]) for row in table) == contacts
    partners = staff.get("/app/attribution", params={**RANGE, "group": "partner"})
    assert any(r["attrs"]["data-value"] == "ACME" for r in attribution_rows(partners.text))


def test_a_resent_batch_changes_no_number(seeded: Seeded, staff: httpx.Client) -> None:
    params = {**RANGE, "site": str(seeded.site.site_id)}
    before = staff.get("/app", params=params).text
    answer = httpx.post(
        f"{seeded.server.base_url}/collect/{seeded.site.site_key}",
        content=seeded.resend,
        headers={"Origin": ORIGIN, "User-Agent": BROWSER, "Content-Type": "text/plain"},
    )
    assert answer.status_code == 202
    # A hit on the other site after it: once that is stored, the re-sent batch has been drained too.
    send(seeded.http, seeded.other_site, [hit(datetime.now(UTC) - timedelta(hours=2), "/marker")], None)
    seeded.visits += 1
    wait_stored(seeded.tenant.tenant_id, seeded.visits)
    after = staff.get("/app", params=params).text
    assert cards(after) == cards(before)
    assert breakdown(after, "source") == breakdown(before, "source")


def test_the_live_panel_counts_a_fresh_visit(seeded: Seeded, staff: httpx.Client) -> None:
    params = {"site": str(seeded.site.site_id)}
    before = staff.get("/app/live", params=params)
    assert before.status_code == 200
    count = int(re.search(r'class="live-visitors">(\d+)<', before.text).group(1))  # type: ignore[union-attr]
    send(seeded.http, seeded.site, [hit(datetime.now(UTC), "/just-now")], None)
    seeded.visits += 1
    wait_stored(seeded.tenant.tenant_id, seeded.visits)
    fragment = staff.get("/app/live", params=params).text
    assert f'class="live-visitors">{count + 1}<' in fragment
    assert "/just-now" in fragment
    assert "<html" not in fragment, "the fragment is the panel alone"
    assert 'id="live-panel"' in staff.get("/app", params=params).text, "the page carries the panel without a script"


def test_another_tenants_site_is_not_found_and_bad_dates_say_why(
    seeded: Seeded, staff: httpx.Client, make_tenant: Callable[..., TenantHandle]
) -> None:
    stranger = make_site(make_tenant("Strangerco"), ["https://stranger.example"])
    for path in ("/app", "/app/attribution", "/app/live", "/app/attribution/csv"):
        assert staff.get(path, params={"site": str(stranger.site_id)}).status_code == 404, path
    cases = [
        ({"period": "custom", "from": "2026-13-01", "to": "2026-12-01"}, "is not a date like"),
        ({"period": "custom", "from": TODAY.isoformat(), "to": START.isoformat()}, "must not be before start"),
        ({"period": "custom", "from": "2020-01-01", "to": "2026-01-01"}, "at most 400 days"),
        ({"period": "fortnight"}, "unknown period"),
        ({"period": "custom", "from": TODAY.isoformat()}, "needs both a from and a to date"),
    ]
    for params, reason in cases:
        answer = staff.get("/app", params=params)
        assert answer.status_code == 400, params
        assert reason in answer.text, (params, answer.text)
    assert staff.get("/app/attribution", params={"model": "middle"}).status_code == 400


def test_a_panel_that_times_out_says_so_and_the_page_still_renders(seeded: Seeded, owner_url: str) -> None:
    server = start_api_server(TRAILMARK_REPORT_STATEMENT_TIMEOUT_MS="100")
    try:
        staff = login_http(server.base_url, seeded.tenant.slug, seeded.tenant.owner_email)
        # The traffic rollups held by another transaction: the report waits past its timeout and is cancelled.
        with psycopg.connect(owner_url) as blocker:
            tables = ", ".join(shape.traffic_table for shape in KEPT_SHAPES)
            blocker.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
            page = staff.get("/app", params=RANGE)
            attribution = staff.get("/app/attribution", params=RANGE)
            blocker.rollback()
        assert page.status_code == 200
        assert "This panel timed out — try a shorter range" in page.text
        assert 'id="live-panel"' in page.text and 'class="live-visitors"' in page.text, "the live panel still works"
        assert attribution.status_code == 200
        assert "This panel timed out — try a shorter range" in attribution.text
    finally:
        server.stop()


def test_the_report_screens_in_a_browser(seeded: Seeded, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    base = seeded.server.base_url
    login_browser(page, base, seeded.tenant.slug, seeded.tenant.owner_email)
    query = "&".join(f"{k}={v}" for k, v in RANGE.items())
    page.goto(f"{base}/app?{query}")
    check_screen(page, "overview")
    # A row click filters without a reload: the script swaps <main> and the address follows.
    page.evaluate("window.notReloaded = true")
    page.locator("table[data-dimension='channel'] a", has_text="Email").click()
    page.wait_for_url(re.compile(r"channel=Email"))
    page.get_by_text("Channel is").wait_for()
    assert page.evaluate("window.notReloaded === true"), "filtered without a reload"
    check_screen(page, "overview-filtered")
    page.goto(f"{base}/app/attribution?{query}&model=first")
    check_screen(page, "attribution-first")
    page.get_by_role("link", name="Last touch").click()
    page.wait_for_url(re.compile(r"model=last"))
    page.locator("table.attribution[data-model='last']").wait_for()
    check_screen(page, "attribution-last")
    page.close()


def test_the_live_panel_keeps_to_the_pages_filters(seeded: Seeded, staff: httpx.Client) -> None:
    """A marketer looking at the Email channel sees who is on the site from Email right now, not everyone."""
    mail = {"utm": {"source": "newsletter", "medium": "email", "campaign": "live"}}
    now = datetime.now(UTC)
    send(seeded.http, seeded.site, [{**hit(now, "/live-mail"), **mail}], None)
    send(seeded.http, seeded.site, [hit(now, "/live-direct")], None)
    seeded.visits += 2
    wait_stored(seeded.tenant.tenant_id, seeded.visits)
    site = {"site": str(seeded.site.site_id)}
    everyone = staff.get("/app/live", params=site).text
    assert "/live-mail" in everyone and "/live-direct" in everyone
    dims = visit_dimension_sql("visits")
    for filters in ({"channel": "Email"}, {"campaign": "live", "source": "newsletter"}):
        fragment = staff.get("/app/live", params={**site, **filters})
        assert fragment.status_code == 200, fragment.text
        assert "/live-mail" in fragment.text and "/live-direct" not in fragment.text, filters
        where = " AND ".join(f"{dims[name]} = :{name}" for name in filters)
        with tenant_session(seeded.tenant.tenant_id) as session:
            expected = session.execute(
                text(
                    f"""SELECT count(DISTINCT visitor_id) FROM visits WHERE NOT is_bot AND site_id = :site
                        AND occurred_at > now() - interval '30 minutes' AND {where}"""
                ),
                {**filters, "site": seeded.site.site_id},
            ).scalar()
        assert f'class="live-visitors">{expected}<' in fragment.text, filters
    page = staff.get("/app", params={**site, "channel": "Email"}).text
    assert "/live-mail" in page and "/live-direct" not in page, "the page's own panel is filtered too"
