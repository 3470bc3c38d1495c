"""Reports: the overview and attribution a tenant reads equal what a plain scan of its stored visits and
contacts gives, through the real collect → ingest pipeline, re-sent batches, merges and the nightly check."""

from __future__ import annotations

import calendar
import logging
import statistics
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from sqlalchemy import text

from tenants.isolation import tenant_session
from tenants.reports.dimensions import (
    DIMENSION_INPUTS,
    DIMENSIONS,
    input_dimension_sql,
    touch_dimension_sql,
    visit_dimension_inputs_sql,
    visit_dimension_sql,
)
from tenants.reports.rollups import check_day, compare_rollups, cover, month_blocks
from tenants.reports.service import (
    MAX_RANGE_DAYS,
    TOP_ROWS,
    ReportQuery,
    attribution,
    median_of_histogram,
    overview,
)
from tests.conftest import TenantHandle, child_env, make_site, wait_stored
from tests.support.reports import BASE, BROWSER, ORIGIN, TODAY, SeededReports, hit, seed_reports, send


@pytest.fixture
def seeded(client: TestClient[Any], pipeline: None, make_tenant: Callable[..., TenantHandle]) -> SeededReports:
    return seed_reports(client, make_tenant("Reports"))


# --- the plain scans the reports must equal ---------------------------------------------------------------


def _filter_sql(dims: dict[str, str], filters: dict[str, str]) -> tuple[str, dict[str, str]]:
    clauses = [f"{dims[name]} = :f_{name}" for name in filters]
    return (" AND ".join(clauses) or "true"), {f"f_{name}": value for name, value in filters.items()}


def scan_traffic(
    tenant: TenantHandle, q: ReportQuery, group_by: tuple[str, ...] = ()
) -> dict[tuple[str, ...], dict[str, int]]:
    """Visitors (first hit of a day), new visitors (first hit ever), entries, pageviews, from the visits."""
    dims = visit_dimension_sql("h")
    where, params = _filter_sql(dims, q.filters)
    keys = ", ".join(f"{dims[name]}" for name in group_by) or "'all'"
    positions = ", ".join(str(i + 1) for i in range(len(group_by) or 1))
    statement = f"""WITH h AS (SELECT v.*, (v.occurred_at AT TIME ZONE 'UTC')::date AS day,
                         lag(v.occurred_at) OVER (PARTITION BY v.visitor_id ORDER BY v.occurred_at, v.hit_id) AS prev
                     FROM visits v)
        SELECT {keys}, count(*) FILTER (WHERE prev IS NULL OR (prev AT TIME ZONE 'UTC')::date < day),
            count(*) FILTER (WHERE prev IS NULL),
            count(*) FILTER (WHERE prev IS NULL OR occurred_at - prev > interval '30 minutes'),
            count(*) FILTER (WHERE type = 'pageview')
        FROM h WHERE day BETWEEN :start AND :end AND (:bots OR NOT is_bot)
            AND (CAST(:site AS uuid) IS NULL OR site_id = CAST(:site AS uuid)) AND {where}
        GROUP BY {positions}"""
    with tenant_session(tenant.tenant_id) as session:
        rows = session.execute(
            text(statement), {**params, "start": q.start, "end": q.end, "bots": q.include_bots, "site": q.site_id}
        ).all()
    names = ("visitors", "new_visitors", "entries", "pageviews")
    return {tuple(row[: len(group_by) or 1]): dict(zip(names, row[len(group_by) or 1 :], strict=True)) for row in rows}


def scan_contacts(
    tenant: TenantHandle, q: ReportQuery, touch: str = "first", group_by: tuple[str, ...] = ()
) -> dict[tuple[str, ...], int]:
    dims = touch_dimension_sql(f"c.{touch}_touch")
    where, params = _filter_sql(dims, q.filters)
    keys = ", ".join(dims[name] for name in group_by) or "'all'"
    positions = ", ".join(str(i + 1) for i in range(len(group_by) or 1))
    statement = f"""SELECT {keys}, count(*) FROM contacts c
        WHERE c.merged_into IS NULL AND (c.created_at AT TIME ZONE 'UTC')::date BETWEEN :start AND :end AND {where}
        GROUP BY {positions}"""
    with tenant_session(tenant.tenant_id) as session:
        rows = session.execute(text(statement), {**params, "start": q.start, "end": q.end}).all()
    return {tuple(row[: len(group_by) or 1]): int(row[-1]) for row in rows}


def _total(scan: dict[tuple[str, ...], dict[str, int]]) -> dict[str, int]:
    return scan.get(("all",), dict.fromkeys(("visitors", "new_visitors", "entries", "pageviews"), 0))


def assert_overview_equals_a_scan(tenant: TenantHandle, q: ReportQuery) -> None:
    with tenant_session(tenant.tenant_id) as session:
        report = overview(session, q)
    expected = _total(scan_traffic(tenant, q))
    got = report.totals
    assert (got.visitors, got.new_visitors, got.entries, got.pageviews) == (
        expected["visitors"],
        expected["new_visitors"],
        expected["entries"],
        expected["pageviews"],
    ), q
    assert got.new_contacts == scan_contacts(tenant, q).get(("all",), 0), q
    previous = q.previous()
    expected_before = _total(scan_traffic(tenant, previous))
    assert report.previous is not None
    assert report.previous.entries == expected_before["entries"]
    assert report.previous.new_contacts == scan_contacts(tenant, previous).get(("all",), 0)
    assert len(report.series) == q.days
    assert sum(p.pageviews for p in report.series) == expected["pageviews"]
    for name in DIMENSIONS:
        scanned = scan_traffic(tenant, q, (name,))
        contacts = scan_contacts(tenant, q, "first", (name,))
        shown = {row.value: (row.visitors, row.entries, row.new_visitors) for row in report.breakdowns[name]}
        # Every value with visitors, visits or new contacts; none with page views only (navigation).
        assert shown == {
            k[0]: (v["visitors"], v["entries"], v["new_visitors"])
            for k, v in scanned.items()
            if v["visitors"] or v["entries"] or contacts.get(k)
        }, name
        assert {r.value: r.new_contacts for r in report.breakdowns[name] if r.new_contacts} == {
            k[0]: n for k, n in contacts.items() if k[0] in shown
        }, name


def assert_attribution_equals_a_scan(tenant: TenantHandle, q: ReportQuery, model: str) -> None:
    group_by = ("channel", "source")
    with tenant_session(tenant.tenant_id) as session:
        rows = attribution(session, q, model, list(group_by))  # type: ignore[arg-type]
    traffic = scan_traffic(tenant, q, group_by)
    measure = "new_visitors" if model == "first" else "entries"
    contacts = scan_contacts(tenant, q, model, group_by)
    expected = {
        key: (traffic.get(key, {}).get(measure, 0), contacts.get(key, 0))
        for key in traffic.keys() | contacts.keys()
        if traffic.get(key, {}).get(measure, 0) or contacts.get(key, 0)
    }
    assert {(r.group["channel"], r.group["source"]): (r.visitors, r.new_contacts) for r in rows} == expected


# --- the stories --------------------------------------------------------------------------------------------


def test_overview_and_attribution_equal_a_scan_of_the_stored_visits(seeded: SeededReports) -> None:
    """A marketer's numbers are exactly what the stored visits and contacts say, whatever the filter or touch."""
    tenant = seeded.site.tenant
    whole = ReportQuery(start=TODAY - timedelta(days=9), end=TODAY)
    queries = [
        whole,
        ReportQuery(start=TODAY - timedelta(days=6), end=TODAY - timedelta(days=3)),
        ReportQuery(start=whole.start, end=whole.end, filters={"channel": "Email"}),
        ReportQuery(start=whole.start, end=whole.end, filters={"source": "google.com", "landing_page": "/"}),
        ReportQuery(start=whole.start, end=whole.end, filters={"click_platform": "meta"}),
        ReportQuery(start=whole.start, end=whole.end, include_bots=True),
        ReportQuery(start=whole.start, end=whole.end, site_id=seeded.site.site_id),
    ]
    for q in queries:
        assert_overview_equals_a_scan(tenant, q)
        assert_attribution_equals_a_scan(tenant, q, "first")
        assert_attribution_equals_a_scan(tenant, q, "last")
    with tenant_session(tenant.tenant_id) as session:
        report = overview(session, whole)
        by_channel = {row.value: row for row in report.breakdowns["channel"]}
        assert {"Organic search", "Email", "Paid social", "Paid search", "Partner", "Direct"} <= set(by_channel)
        assert report.totals.new_contacts == 4
        assert report.totals.conversion_rate == pytest.approx(4 / report.totals.new_visitors)
        first = attribution(session, whole, "first", ["channel"])
        days = [row.median_days_to_contact for row in first if row.new_contacts]
        assert all(d is not None and d >= 1 for d in days)  # the contacts came days after their first visit


@pytest.mark.parametrize("dimension", ["landing_page", "campaign"])
def test_each_table_shows_the_top_rows_of_a_scan_ranked_by_visitors_then_visits(
    client: TestClient[Any], pipeline: None, make_tenant: Callable[..., TenantHandle], dimension: str
) -> None:
    """Past 25 values a table shows the first 25 of the scan in the screen's order (visitors, then visits,
    then name), ties at the cut included before the name decides: the long tail is ranked in the database
    (landing pages in their own shape, campaigns in the by-dimension one)."""
    tenant = make_tenant("Toprows")
    site = make_site(tenant, [ORIGIN])
    # (visitors, visits) per value: 20 values (2, 2), then 10 tied at (1, 2) across the 25th place,
    # then 10 at (1, 1).
    plan = [(f"p{n:02d}", 2, 1) for n in range(20)] + [(f"p{n:02d}", 1, 2) for n in range(20, 40)]
    plan = plan[:30] + [(value, 1, 1) for value, _, _ in plan[30:]]
    sent = 0
    for value, browsers, sessions in plan:
        for _ in range(browsers):
            token = None
            for number in range(sessions):  # a second visit an hour later: a new session, the same visitor
                at = BASE + timedelta(hours=number)
                landing = hit(at, f"/{value}") if dimension == "landing_page" else hit(at, utm={"campaign": value})
                token, _ = send(client, site, [landing], token)
                sent += 1
    wait_stored(tenant.tenant_id, sent)
    q = ReportQuery(start=BASE.date(), end=BASE.date())
    with tenant_session(tenant.tenant_id) as session:
        shown = [(r.value, r.visitors, r.entries) for r in overview(session, q).breakdowns[dimension]]
    scanned = [(k[0], v["visitors"], v["entries"]) for k, v in scan_traffic(tenant, q, (dimension,)).items()]
    assert len(scanned) == 40
    assert shown == sorted(scanned, key=lambda row: (-row[1], -row[2], row[0]))[:TOP_ROWS]
    prefix = "/" if dimension == "landing_page" else ""
    assert [value for value, _, _ in shown[20:]] == [f"{prefix}p{n}" for n in range(20, 25)]


def test_a_resent_batch_and_a_replay_do_not_change_the_reports(client: TestClient[Any], seeded: SeededReports) -> None:
    """Re-sent hits are stored once, so the rollups count them once: the nightly check finds no difference."""
    tenant = seeded.site.tenant
    q = ReportQuery(start=TODAY - timedelta(days=9), end=TODAY, site_id=seeded.site.site_id)
    with tenant_session(tenant.tenant_id) as session:
        before = overview(session, q).totals
    answer = client.post(
        f"/collect/{seeded.site.site_key}",
        content=seeded.resend,
        headers={"Origin": ORIGIN, "User-Agent": BROWSER, "Content-Type": "text/plain"},
    )
    assert answer.status_code == 202
    # A hit on the other site after it: once it is stored, the re-sent batch has been drained too.
    send(client, seeded.other_site, [hit(datetime.now(UTC), "/marker")], None)
    wait_stored(tenant.tenant_id, seeded.visits + 1)
    with tenant_session(tenant.tenant_id) as session:
        assert overview(session, q).totals == before
        assert compare_rollups(session, TODAY - timedelta(days=9), TODAY) == []
    assert_overview_equals_a_scan(tenant, ReportQuery(start=q.start, end=q.end))


@pytest.mark.parametrize("table", ["traffic_rollups", "traffic_dimension_rollups"])
def test_the_nightly_check_finds_a_corrupted_rollup_and_the_rebuild_repairs_it(
    seeded: SeededReports, owner_url: str, caplog: pytest.LogCaptureFixture, table: str
) -> None:
    tenant = seeded.site.tenant
    day = (BASE + timedelta(days=3)).date()
    with tenant_session(tenant.tenant_id) as session:
        assert check_day(session, day) == []
    with psycopg.connect(owner_url) as owner:
        owner.execute(
            f"UPDATE {table} SET pageviews = pageviews + 5 WHERE tenant_id = %s AND span = 'day' AND day = %s",
            (tenant.tenant_id, day),
        )
    with caplog.at_level(logging.WARNING), tenant_session(tenant.tenant_id) as session:
        differences = check_day(session, day)
    # The corrupted day rows differ from the scan; the block and month rows above them (right) from the sum
    # of the corrupted days.
    day_rows = [d for d in differences if d.key[0] == "day"]
    assert day_rows
    assert all(d.table == table and d.stored[0] == d.derived[0] + 5 for d in day_rows)
    assert all(d.table == table and d.stored[0] == d.derived[0] - 5 for d in differences if d.key[0] != "day")
    assert str(tenant.tenant_id) in caplog.text
    rebuilt = subprocess.run(
        [sys.executable, "-m", "api.cli", "reports", "rebuild", "--from", str(day - timedelta(days=5)),
         "--to", str(TODAY), "--tenant", str(tenant.tenant_id)],
        env=child_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "for 1 tenant" in rebuilt.stdout
    with tenant_session(tenant.tenant_id) as session:
        assert compare_rollups(session, day - timedelta(days=5), TODAY) == []
    assert_overview_equals_a_scan(tenant, ReportQuery(start=TODAY - timedelta(days=9), end=TODAY))


def test_a_merge_of_two_contacts_keeps_the_contact_counts_equal_to_a_scan(
    client: TestClient[Any], seeded: SeededReports
) -> None:
    """Two people who turn out to be one count as one new contact, under the kept contact's touches."""
    tenant = seeded.site.tenant
    keep, other = seeded.contact_ids[0], seeded.contact_ids[1]
    merged = client.post(f"/api/v1/contacts/{keep}/merge", json={"other_contact_id": other}, headers=tenant.headers)
    assert merged.status_code == 200, merged.text
    q = ReportQuery(start=TODAY - timedelta(days=9), end=TODAY)
    with tenant_session(tenant.tenant_id) as session:
        assert overview(session, q).totals.new_contacts == 3
        assert compare_rollups(session, q.start, q.end) == []
    for model in ("first", "last"):
        assert_attribution_equals_a_scan(tenant, q, model)


def test_another_tenant_sees_nothing_and_not_our_site(
    client: TestClient[Any], seeded: SeededReports, make_tenant: Callable[..., TenantHandle]
) -> None:
    stranger = make_tenant("Stranger")
    params = {"start": str(TODAY - timedelta(days=9)), "end": str(TODAY)}
    answer = client.get("/api/v1/reports/overview", params=params, headers=stranger.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["totals"]["visits"] == 0
    assert answer.json()["totals"]["new_contacts"] == 0
    assert client.get("/api/v1/reports/attribution", params=params, headers=stranger.headers).json()["rows"] == []
    for path in ("overview", "attribution", "live"):
        foreign = client.get(
            f"/api/v1/reports/{path}", params={**params, "site_id": str(seeded.site.site_id)}, headers=stranger.headers
        )
        assert foreign.status_code == 404, foreign.text
    own = client.get("/api/v1/reports/overview", params=params, headers=seeded.site.tenant.headers).json()
    assert (
        own["totals"]["visits"]
        == _total(scan_traffic(seeded.site.tenant, ReportQuery(TODAY - timedelta(days=9), TODAY)))["entries"]
    )


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("overview", {"start": "2026-05-10", "end": "2026-05-01"}, "end"),
        ("overview", {"start": "2024-01-01", "end": "2026-01-01"}, "end"),
        ("attribution", {"start": "2026-05-01", "end": "2026-05-10", "group_by": "channel,colour"}, "group_by"),
        ("attribution", {"start": "2026-05-01", "end": "2026-05-10", "model": "linear"}, None),
        ("overview", {"start": "yesterday", "end": "2026-05-10"}, None),
        ("overview", {"start": "0001-01-01", "end": "0001-01-01"}, "start"),
    ],
)
def test_an_invalid_report_query_is_a_400_with_the_reason(
    client: TestClient[Any],
    make_tenant: Callable[..., TenantHandle],
    path: str,
    params: dict[str, str],
    field: str | None,
) -> None:
    answer = client.get(f"/api/v1/reports/{path}", params=params, headers=make_tenant("Asker").headers)
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["detail"]
    if field:
        assert field in [error["field"] for error in problem["errors"]]


def test_the_live_panel_counts_the_last_minutes(client: TestClient[Any], seeded: SeededReports) -> None:
    tenant = seeded.site.tenant
    now = datetime.now(UTC)
    send(client, seeded.site, [hit(now - timedelta(minutes=5), "/now"), hit(now, "/now")], None)
    send(client, seeded.site, [hit(now - timedelta(minutes=50), "/earlier")], None)
    wait_stored(tenant.tenant_id, seeded.visits + 3)
    live = client.get("/api/v1/reports/live", params={"site_id": str(seeded.site.site_id)}, headers=tenant.headers)
    assert live.status_code == 200, live.text
    assert live.json() == {
        "minutes": 30,
        "visitors": 1,
        "pageviews": 2,
        "top_pages": [{"path": "/now", "pageviews": 2}],
    }


def test_days_are_utc_days() -> None:
    assert ReportQuery(start=date(2026, 3, 1), end=date(2026, 3, 31)).previous().start == date(2026, 1, 29)


def test_the_dimensions_from_their_inputs_equal_the_dimensions_of_the_visit(
    make_tenant: Callable[..., TenantHandle],
) -> None:
    """Ingest computes the dimensions once per distinct input combination (URLs cut at ``?``/``#``, the click
    platform): for awkward URLs they must be exactly those of the visit itself."""
    urls = [
        "https://shop.example/pricing?utm_source=x#top",
        "https://user:pw@www.Shop.example:8443/a/b?q=1",
        "HTTP://shop.example?x=/y",
        "https://shop.example#frag?x",
        "https://shop.example",
        "ht?tp://shop.example/p",
        "/relative/path?x",
        "mailto:someone@example.com",
        "android-app://com.google.android.gm/",
        "",
    ]
    referrers = [None, "", "https://www.google.com/search?q=a#b", "https://shop.example/?r", "https://t.co", *urls]
    clicks = ["{}", '{"gclid": "a"}', '{"fbclid": "b", "msclkid": "c"}', '{"li_fat_id": "d"}']
    row = "SELECT * FROM (VALUES (CAST(:url AS text), CAST(:referrer AS text), CAST(:source AS text),"
    row += " CAST(:medium AS text), CAST(:campaign AS text), CAST(:click_ids AS jsonb), CAST(:partner AS text)))"
    row += " AS v(url, referrer, utm_source, utm_medium, utm_campaign, click_ids, partner_code)"
    direct = visit_dimension_sql("v")
    inputs = visit_dimension_inputs_sql("v")
    grouped = input_dimension_sql("i")
    statement = text(
        f"""SELECT ARRAY[{", ".join(direct[d] for d in DIMENSIONS)}],
               (SELECT ARRAY[{", ".join(grouped[d] for d in DIMENSIONS)}]
                FROM (SELECT {", ".join(f"{inputs[n]} AS {n}" for n in DIMENSION_INPUTS)}) i)
           FROM ({row}) v"""
    )
    tenant = make_tenant()
    cases = 0
    with tenant_session(tenant.tenant_id) as session:
        for url in urls:
            for referrer in referrers:
                for click_ids in clicks:
                    for source, medium in ((None, None), ("Facebook", "cpc"), ("", "email"), ("news", "")):
                        params = {
                            "url": url,
                            "referrer": referrer,
                            "source": source,
                            "medium": medium,
                            "campaign": "spring",
                            "click_ids": click_ids,
                            "partner": None,
                        }
                        want, have = session.execute(statement, params).one()
                        assert have == want, params
                        cases += 1
    assert cases > 1000


@given(st.dictionaries(st.integers(-1, 400), st.integers(0, 50), max_size=30))
@settings(max_examples=300, deadline=None)
def test_median_days_to_contact_is_the_median_of_every_contact(owner_url: str, counts: dict[int, int]) -> None:
    """Attribution's median is walked, in SQL, over the (days, contacts) histogram; it must equal the median of
    the list of every contact's known days (-1: the first visit is unknown), and the contacts their count."""
    every_contact = [days for days, count in counts.items() if days >= 0 for _ in range(count)]
    expected = float(statistics.median(every_contact)) if every_contact else None
    statement = (
        "WITH histogram(channel, days, contacts) AS (SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[])) "
        + median_of_histogram("histogram", ["channel"])
    )
    with psycopg.connect(owner_url) as connection:
        rows = connection.execute(statement, (["Email"] * len(counts), list(counts), list(counts.values()))).fetchall()
    if not counts:
        assert rows == []
        return
    [(channel, contacts, median)] = rows
    assert (channel, contacts) == ("Email", sum(counts.values()))
    assert (None if median is None else float(median)) == expected


@given(start=st.dates(date(2024, 1, 1), date(2027, 12, 31)), length=st.integers(1, MAX_RANGE_DAYS))
@settings(max_examples=400, deadline=None)
def test_a_range_is_read_as_a_signed_sum_of_few_buckets_that_is_exactly_its_days(start: date, length: int) -> None:
    """Reports read months, blocks and days, some subtracted: every day of the range counts once, no other
    day counts, and a 90-day range reads at most 13 buckets (so its cost does not grow with its days)."""
    end = start + timedelta(days=length - 1)
    buckets = cover(start, end)
    tally: dict[date, int] = {}
    for span, first, sign in zip(buckets.spans, buckets.days, buckets.signs, strict=True):
        if span == "day":
            last = first
        elif span == "block":
            last = next(
                block_last for block_first, block_last in month_blocks(first.replace(day=1)) if block_first == first
            )
        else:
            last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
        for offset in range((last - first).days + 1):
            day = first + timedelta(days=offset)
            tally[day] = tally.get(day, 0) + sign
    assert {day for day, count in tally.items() if count} == {start + timedelta(days=n) for n in range(length)}
    assert all(count in (0, 1) for count in tally.values())
    if length <= 90:
        assert len(buckets.spans) <= 13


def test_the_live_panel_takes_the_reports_dimension_filters(client: TestClient[Any], seeded: SeededReports) -> None:
    """Every report operation narrows by the same eight dimensions, declared alike in the schema."""
    tenant = seeded.tenant
    now = datetime.now(UTC)
    paid = {"utm": {"source": "facebook", "medium": "cpc"}, "click_ids": {"fbclid": "F9"}}
    send(client, seeded.site, [{**hit(now, "/paid"), **paid}], None)
    send(client, seeded.site, [hit(now, "/plain")], None)
    wait_stored(tenant.tenant_id, seeded.visits + 2)
    for filters in ({"click_platform": "meta"}, {"channel": "Paid social"}, {"landing_page": "/paid"}):
        live = client.get("/api/v1/reports/live", params=filters, headers=tenant.headers)
        assert live.status_code == 200, live.text
        assert live.json()["top_pages"] == [{"path": "/paid", "pageviews": 1}], filters
    unknown = client.get("/api/v1/reports/live", params={"channel": "x" * 201}, headers=tenant.headers)
    assert unknown.status_code == 400
    schema = client.get("/api/schema/openapi.json").json()["paths"]
    declared = [
        {
            p["name"]: p["schema"]
            for p in schema[f"/api/v1/reports/{path}"]["get"]["parameters"]
            if p["name"] in DIMENSIONS
        }
        for path in ("overview", "attribution", "live")
    ]
    assert set(declared[0]) == set(DIMENSIONS)
    assert declared[0] == declared[1] == declared[2]


def test_revenue_and_customers_in_the_reports_equal_a_scan_of_the_purchases(
    client: TestClient[Any], seeded: SeededReports
) -> None:
    """Sales land on the contacts the tracker attributed: the overview's revenue and the attribution's revenue
    and new customers per channel and source are exactly what the purchases (net of refunds) give."""
    tenant = seeded.tenant
    orders = [(seeded.contact_ids[0], 12_000), (seeded.contact_ids[1], 3_500), (seeded.contact_ids[0], 800)]
    for number, (contact_id, amount) in enumerate(orders):
        body = {"external_id": f"rev-{number}", "amount": amount, "currency": "EUR", "contact_id": contact_id}
        answer = client.post("/api/v1/purchases", json=body, headers=tenant.headers)
        assert answer.status_code == 201, answer.text
        if number == 0:
            refunds = f"/api/v1/purchases/{answer.json()['id']}/refunds"
            assert client.post(refunds, json={"amount": 2_000}, headers=tenant.headers).status_code == 201
    dollars = {"external_id": "rev-usd", "amount": 99_00, "currency": "USD", "contact_id": seeded.contact_ids[1]}
    assert client.post("/api/v1/purchases", json=dollars, headers=tenant.headers).status_code == 201
    q = ReportQuery(start=TODAY - timedelta(days=9), end=TODAY)
    with tenant_session(tenant.tenant_id) as session:
        report = overview(session, q)
        assert (report.currency, report.totals.revenue, report.totals.purchases) == ("EUR", 14_300, 3)
        assert report.totals.new_customers == 2
        assert sum(point.revenue for point in report.series) == 14_300
        in_dollars = overview(session, ReportQuery(start=q.start, end=q.end, currency="USD"))
        # The dollar buyer had bought in euros already: a customer is new once, whatever the currency.
        assert (in_dollars.totals.revenue, in_dollars.totals.new_customers) == (99_00, 0)
        for model in ("first", "last"):
            rows = attribution(session, q, model, ["channel", "source"])  # type: ignore[arg-type]
            dims = touch_dimension_sql(f"p.{model}_touch")
            scan = session.execute(
                text(
                    f"""SELECT {dims["channel"]}, {dims["source"]}, sum(p.amount - p.refunded_amount),
                            count(*) FILTER (WHERE p.new_customer)
                        FROM purchases p WHERE p.currency = 'EUR' GROUP BY 1, 2"""
                )
            ).all()
            expected = {
                (channel, source): (int(revenue), int(customers)) for channel, source, revenue, customers in scan
            }
            have = {(r.group["channel"], r.group["source"]): (r.revenue, r.customers) for r in rows if r.revenue}
            assert have == expected, model
            assert all(r.currency == "EUR" for r in rows)
    answer = client.get(
        "/api/v1/reports/attribution",
        params={"start": q.start.isoformat(), "end": q.end.isoformat(), "currency": "usd"},
        headers=tenant.headers,
    )
    assert answer.status_code == 400, "a currency is three capital letters"
