"""Reports read from the daily rollups: the overview, attribution (first or last touch) and the live panel.

The dashboard and the REST API both call these; nothing here knows about HTTP. Every query runs under
``report_statement_timeout_ms`` and a cancelled one raises :class:`ReportTimedOut`.

Definitions (see docs/reports.md): *visitors* are counted once per day (the sum of daily uniques), *visits*
are entries (a hit that starts a session), *new visitors* are first hits ever (the first touch), *new
contacts* are contacts created in the range, attributed by their first touch. Contacts belong to the tenant,
not to a site, so a site filter does not narrow new contacts.

The overview's visitors, visits and pageviews include the cookieless counts of opt-in sites (browsers that have
not consented, ``tenants/tracking/cookieless.py``); attribution and everything about contacts do not: those
browsers are never known, so they never become anyone's touches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal
from uuid import UUID

import psycopg.errors
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from tenants.errors import InvalidQuery, ReportTimedOut
from tenants.isolation import current_tenant_id
from tenants.purchases.currencies import is_currency
from tenants.reports.dimensions import DIMENSIONS, visit_dimension_sql
from tenants.reports.rollups import BY_DIMENSION, RollupShape, cover, covered, narrowest_shape
from tenants.settings import get_settings
from tenants.tracking.sites import get_site

__all__ = [
    "DEFAULT_ATTRIBUTION_GROUPS",
    "MAX_RANGE_DAYS",
    "TOP_ROWS",
    "AttributionRow",
    "BreakdownRow",
    "LivePanel",
    "Overview",
    "ReportQuery",
    "SeriesPoint",
    "Totals",
    "attribution",
    "live",
    "overview",
    "revenue_currency",
]

MAX_RANGE_DAYS = 400
EARLIEST_DAY = date(2000, 1, 1)
"""No visit is older (the tracker is younger); it also keeps the previous period a real date."""
TOP_ROWS = 25
DEFAULT_ATTRIBUTION_GROUPS: tuple[str, ...] = ("channel", "source", "medium", "campaign")
TouchModel = Literal["first", "last"]


@dataclass(frozen=True)
class ReportQuery:
    """What a report covers: ``start`` … ``end`` inclusive (UTC days), one site or all, dimension filters
    (``{"channel": "Email"}``), bots excluded unless asked, compared with the previous period of equal length."""

    start: date
    end: date
    site_id: UUID | None = None
    filters: dict[str, str] = field(default_factory=dict)
    include_bots: bool = False
    compare: bool = True
    currency: str | None = None
    """Revenue is reported in this currency (ISO 4217); None: the one with the most revenue in the range."""

    def __post_init__(self) -> None:
        errors: dict[str, str] = {}
        if self.currency is not None and not is_currency(self.currency):
            errors["currency"] = "must be an ISO 4217 code such as EUR or USD"
        if self.start < EARLIEST_DAY:
            errors["start"] = f"must be {EARLIEST_DAY} or later"
        if self.end < self.start:
            errors["end"] = "must not be before start"
        elif (self.end - self.start).days + 1 > MAX_RANGE_DAYS:
            errors["end"] = f"the range may cover at most {MAX_RANGE_DAYS} days"
        for name in self.filters:
            if name not in DIMENSIONS:
                errors[name] = f"unknown dimension; known: {', '.join(DIMENSIONS)}"
        if errors:
            raise InvalidQuery("the report query is invalid", errors)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> ReportQuery:
        """The period of equal length just before this one."""
        length = timedelta(days=self.days)
        return ReportQuery(
            self.start - length, self.end - length, self.site_id, self.filters, self.include_bots, False, self.currency
        )


@dataclass(frozen=True)
class Totals:
    visitors: int = 0
    """Counted once per day: a visitor seen on three days of the range counts three times."""
    new_visitors: int = 0
    entries: int = 0
    """Visits: hits that start a session (the first, or more than 30 minutes after the previous)."""
    pageviews: int = 0
    new_contacts: int = 0
    purchases: int = 0
    revenue: int = 0
    """Net of refunds, in minor units of the overview's currency, by the purchases' days."""
    new_customers: int = 0
    """Contacts whose first purchase falls in the range."""
    cookieless_visitors: int = 0
    """Of ``visitors``, those counted without a cookie (an opt-in site's browsers before consent; per day only, so
    one seen on two days counts twice). Never new visitors: nobody knows whether such a browser is new."""

    @property
    def conversion_rate(self) -> float | None:
        """New contacts per new visitor; None without new visitors."""
        return self.new_contacts / self.new_visitors if self.new_visitors else None


@dataclass(frozen=True)
class SeriesPoint:
    day: date
    visitors: int = 0
    new_visitors: int = 0
    entries: int = 0
    pageviews: int = 0
    new_contacts: int = 0
    revenue: int = 0


@dataclass(frozen=True)
class BreakdownRow:
    value: str
    visitors: int
    entries: int
    new_visitors: int
    new_contacts: int
    previous_entries: int | None


@dataclass(frozen=True)
class Overview:
    query: ReportQuery
    totals: Totals
    previous: Totals | None
    series: list[SeriesPoint]
    breakdowns: dict[str, list[BreakdownRow]]
    currency: str | None = None
    """The currency of the revenue numbers; None when the range has no purchases."""
    previous_series: list[SeriesPoint] | None = None
    """The previous period day by day, when compared (its day ``n`` lines up with the range's day ``n``)."""


@dataclass(frozen=True)
class AttributionRow:
    group: dict[str, str]
    visitors: int
    """First touch: new visitors whose first hit had these dimensions. Last touch: visits (entries) with
    these dimensions, direct ones in the Direct row."""
    new_contacts: int
    median_days_to_contact: float | None
    """From first visit to the contact's creation, over the contacts whose first visit is known."""
    revenue: int = 0
    """Net of refunds, minor units of ``currency``, of the purchases whose buyer's touch had these dimensions."""
    customers: int = 0
    """New customers: buyers whose first purchase falls in the range."""
    currency: str | None = None

    @property
    def conversion_rate(self) -> float | None:
        return self.new_contacts / self.visitors if self.visitors else None

    @property
    def revenue_per_visitor(self) -> float | None:
        return self.revenue / self.visitors if self.visitors else None


@dataclass(frozen=True)
class LivePanel:
    visitors: int
    pageviews: int
    top_pages: list[tuple[str, int]]


@contextmanager
def _report_timeout(session: Session) -> Iterator[None]:
    """Every report statement is cancelled after ``report_statement_timeout_ms``: a panel says it timed
    out instead of hanging the page."""
    timeout = str(get_settings().report_statement_timeout_ms)
    session.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": timeout})
    try:
        yield
    except DBAPIError as error:
        if isinstance(error.orig, psycopg.errors.QueryCanceled):
            session.rollback()
            raise ReportTimedOut("the report took too long and was cancelled; try a shorter range") from error
        raise


report_timeout = _report_timeout
"""The same statement timeout for the reports of other areas (the partners report)."""


def _check_site(session: Session, site_id: UUID | None) -> None:
    """A site of another tenant (or none) is not found, like any other id."""
    if site_id is not None:
        get_site(session, site_id)


def _filters(session: Session, q: ReportQuery, *, traffic: bool) -> tuple[list[str], dict[str, Any]]:
    """The query's tenant, site, bot and dimension conditions on a rollup table aliased ``r``."""
    # The tenant by name, not only through row-level security: Citus routes a statement to one node by it.
    clauses = ["r.tenant_id = :tenant_id"]
    params: dict[str, Any] = {"tenant_id": current_tenant_id(session)}
    if traffic and q.site_id is not None:
        clauses.append("r.site_id = :site_id")
        params["site_id"] = q.site_id
    if traffic and not q.include_bots:
        clauses.append("NOT r.is_bot")
    for name in DIMENSIONS:  # a fixed list of column names, so nothing given is spliced into SQL
        if name in q.filters:
            clauses.append(f"r.{name} = :filter_{name}")
            params[f"filter_{name}"] = q.filters[name]
    return clauses, params


def _grouped(
    session: Session,
    q: ReportQuery,
    *,
    traffic: bool,
    groups: list[str],
    sets: str,
    top: int | None = None,
    only: dict[str, list[str]] | None = None,
) -> list[Any]:
    """One statement over the narrowest rollup table holding ``groups`` and the query's filters: the measures
    (times each bucket's sign) by ``sets``, a SQL ``GROUPING SETS`` list over ``groups``. With ``top``, only
    the rows placed at most ``top`` in their grouping set by visitors, then visits (ties included, so the
    screen's order can still use new contacts and the name), so the long tail of landing pages and referrers
    stays in the database. With ``only``, a grouped dimension named in it answers only those values (the rows
    a screen shows); when every grouped dimension is named and no total is asked for, the rows of other
    values are skipped as the buckets are read, before they are summed."""
    shape = narrowest_shape([*groups, *q.filters])
    table = shape.traffic_table if traffic else shape.contact_table
    clauses, params = _filters(session, q, traffic=traffic)
    if not traffic:
        clauses.append("r.touch = 'first'")
    only = {name: values for name, values in (only or {}).items() if name in groups}
    for name, values in only.items():
        params[f"only_{name}"] = values
    if only and len(only) == len(groups) and "()" not in sets:
        clauses.append("(" + " OR ".join(f"r.{name} = ANY(CAST(:only_{name} AS text[]))" for name in only) + ")")
    measures, sums = _bucket_sums(traffic)
    params.update(cover(q.start, q.end).params())
    columns = ", ".join(f"r.{name}" for name in groups) or "NULL"
    place = ""
    if top is not None:
        partition = f"PARTITION BY GROUPING({columns})" if groups else ""
        place = f", {_place(measures, sums, partition)} AS place"
    statement = f"""SELECT {columns}, {", ".join(sums)}{place} FROM {covered(table, clauses)}
        GROUP BY GROUPING SETS ({sets})"""  # noqa: S608 - names from SHAPES and DIMENSIONS
    kept = [f"(g.{name} IS NULL OR g.{name} = ANY(CAST(:only_{name} AS text[])))" for name in only]
    if top is not None:
        kept.append("g.place <= :top")
        params["top"] = top
    if kept:
        # A grouping set's rows are NULL in the other sets' columns: each condition holds for the rest.
        statement = f"SELECT * FROM ({statement}) g WHERE {' AND '.join(kept)}"  # noqa: S608 - built above
    return list(session.execute(text(statement), params).all())


def _by_dimension(
    session: Session,
    q: ReportQuery,
    *,
    traffic: bool,
    names: list[str],
    top: int | None = None,
    only: dict[str, list[str]] | None = None,
) -> list[Any]:
    """:func:`_grouped` for an unfiltered query over :data:`BY_DIMENSION`'s table, whose rows are already one
    per dimension and value: rows ``(dimension, value, measures…)`` of the dimensions ``names``, with ``top``
    and ``only`` as there (a dimension ``only`` names answers only those values, the others every value)."""
    table = BY_DIMENSION.traffic_table if traffic else BY_DIMENSION.contact_table
    clauses, params = _filters(session, q, traffic=traffic)
    if not traffic:
        clauses.append("r.touch = 'first'")
    only = {name: values for name, values in (only or {}).items() if name in names}
    wanted = ["r.dimension = ANY(CAST(:every_value AS text[]))"]
    params["every_value"] = [name for name in names if name not in only]
    for number, (name, values) in enumerate(only.items()):
        wanted.append(f"(r.dimension = :only_name_{number} AND r.value = ANY(CAST(:only_{number} AS text[])))")
        params.update({f"only_name_{number}": name, f"only_{number}": values})
    clauses.append("(" + " OR ".join(wanted) + ")")
    measures, sums = _bucket_sums(traffic)
    params.update(cover(q.start, q.end).params())
    place = f", {_place(measures, sums, 'PARTITION BY r.dimension')} AS place" if top is not None else ""
    statement = f"""SELECT r.dimension, r.value, {", ".join(sums)}{place} FROM {covered(table, clauses)}
        GROUP BY r.dimension, r.value"""  # noqa: S608 - names from BY_DIMENSION
    if top is not None:
        statement = f"SELECT * FROM ({statement}) g WHERE g.place <= :top"  # noqa: S608 - built above
        params["top"] = top
    return list(session.execute(text(statement), params).all())


def _bucket_sums(traffic: bool) -> tuple[tuple[str, ...], list[str]]:
    """The measures a breakdown reads, and their SQL: summed over a :func:`covered` read, times each bucket's sign."""
    measures = _TRAFFIC_MEASURES if traffic else _CONTACT_MEASURES
    return measures, [f"sum(({_SUMMED.get(m, 'r.' + m)}) * b.sign)::bigint" for m in measures]


def _place(measures: tuple[str, ...], sums: list[str], partition: str) -> str:
    """A row's place in its table: by visitors, then visits (ties share a place)."""
    leading = ", ".join(f"{sums[measures.index(m)]} DESC" for m in ("visitors", "entries"))
    return f"rank() OVER ({partition} ORDER BY {leading})"


_SERIES_MEASURES = ("visitors", "new_visitors", "entries", "pageviews")
_TRAFFIC_MEASURES = (*_SERIES_MEASURES, "cookieless_visitors")
_CONTACT_MEASURES = ("contacts",)
_SUMMED = {
    "visitors": "r.visitors + r.cookieless_visitors",
    "entries": "r.entries + r.cookieless_entries",
    "pageviews": "r.pageviews + r.cookieless_pageviews",
}
"""The overview's traffic measures with the cookieless counts in them (a cookieless hit is never a new visitor)."""


def _breakdowns(
    session: Session,
    q: ReportQuery,
    *,
    traffic: bool,
    top: int | None = None,
    only: dict[str, list[str]] | None = None,
) -> tuple[list[int] | None, dict[str, dict[str, list[int]]]]:
    """The query's totals and its measures by each dimension's value, each read from the narrowest table
    that holds it (one statement per table): ``(totals, {dimension: {value: measures}})``; with ``top``, only
    the values :func:`_grouped` places at most ``top``; with ``only``, only those values of the dimensions
    it names."""
    by_shape: dict[RollupShape, list[str]] = defaultdict(list)
    for name in DIMENSIONS:
        by_value = not q.filters and name in BY_DIMENSION.dimensions
        by_shape[BY_DIMENSION if by_value else narrowest_shape([name, *q.filters])].append(name)
    total_shape = narrowest_shape(q.filters)
    by_shape.setdefault(total_shape, [])
    totals: list[int] | None = None
    values: dict[str, dict[str, list[int]]] = {name: {} for name in DIMENSIONS}
    width = len(_TRAFFIC_MEASURES if traffic else _CONTACT_MEASURES)
    for shape, names in by_shape.items():
        if shape.by_dimension:
            for name, value, *sums in _by_dimension(session, q, traffic=traffic, names=names, top=top, only=only):
                if any(sums[:width]):
                    values[name][value] = [_int(v) for v in sums[:width]]
            continue
        sets = [f"({name})" for name in names]
        if shape == total_shape:
            sets.insert(0, "()")
        rows = _grouped(session, q, traffic=traffic, groups=names, sets=", ".join(sets), top=top, only=only)
        keys = max(len(names), 1)
        for row in rows:
            sums = [_int(v) for v in row[keys : keys + width]]
            grouped = next(((name, row[i]) for i, name in enumerate(names) if row[i] is not None), None)
            if grouped is None:
                totals = sums
            elif any(sums):
                values[grouped[0]][grouped[1]] = sums
    return totals, values


def _int(value: Any) -> int:
    return int(value or 0)


def revenue_currency(session: Session, q: ReportQuery) -> str | None:
    """The query's currency, else the one with the most revenue in its range (None without purchases)."""
    if q.currency is not None:
        return q.currency
    row = session.execute(
        text(
            """SELECT currency FROM purchase_rollups
               WHERE tenant_id = :tenant_id AND day BETWEEN :start AND :end AND touch = 'first'
               GROUP BY currency ORDER BY sum(revenue) DESC, currency LIMIT 1"""
        ),
        {"tenant_id": current_tenant_id(session), "start": q.start, "end": q.end},
    ).first()
    return None if row is None else str(row[0])


def _purchase_sums(
    session: Session,
    q: ReportQuery,
    currency: str,
    *,
    groups: list[str],
    touch: TouchModel = "first",
    days: tuple[date, date] | None = None,
) -> list[Any]:
    """Purchases, revenue and new customers in ``currency`` under the query's filters, by ``groups`` (columns
    of ``purchase_rollups``: dimensions or ``day``), over the query's range or ``days`` (first, last).
    Purchases belong to the tenant, not a site, as contacts."""
    clauses, params = _filters(session, q, traffic=False)
    clauses += ["r.day BETWEEN :start AND :end", "r.touch = :touch", "r.currency = :currency"]
    keys = ", ".join(f"r.{name}" for name in groups)
    statement = f"""SELECT {keys + ", " if keys else ""}sum(r.purchases)::bigint, sum(r.revenue)::bigint,
        sum(r.new_customers)::bigint
        FROM purchase_rollups r WHERE {" AND ".join(clauses)} {"GROUP BY " + keys if keys else ""}"""  # noqa: S608
    first, last = days or (q.start, q.end)
    params.update(start=first, end=last, touch=touch, currency=currency)
    return list(session.execute(text(statement), params).all())


def overview(session: Session, q: ReportQuery) -> Overview:
    """Totals (and the previous period's), a zero-filled daily series and the top rows of every dimension,
    all under the query's filters; each from the narrowest rollup table that holds it."""
    _check_site(session, q.site_id)
    periods = [q, q.previous()] if q.compare else [q]
    with _report_timeout(session):
        traffic_totals, traffic = _breakdowns(session, q, traffic=True, top=TOP_ROWS)
        # A table with TOP_ROWS values that had visitors shows only those (ordered by visitors first), so its
        # new contacts and previous period are read for them alone, not for the long tail of values.
        shown = {
            name: list(by_value)
            for name, by_value in traffic.items()
            if sum(1 for sums in by_value.values() if sums[0] > 0) >= TOP_ROWS
        }
        contact_totals, contacts = _breakdowns(session, q, traffic=False, only=shown)
        currency = revenue_currency(session, q)
        sales = _purchase_sums(session, q, currency, groups=[]) if currency else []
        series = _series(session, periods, currency)
        previous: Totals | None = None
        previous_entries: dict[str, dict[str, int]] = {}
        if q.compare:
            before = periods[1]
            # The shown values whatever their place then: a row shown now may have been far down the list.
            previous_traffic_totals, previous_traffic = _breakdowns(session, before, traffic=True, only=shown)
            previous_contacts = _grouped(session, before, traffic=False, groups=[], sets="()")
            previous_sales = _purchase_sums(session, before, currency, groups=[]) if currency else []
            previous = _totals(
                previous_traffic_totals,
                _int(previous_contacts[0][1]) if previous_contacts else 0,
                previous_sales[0] if previous_sales else None,
            )
            previous_entries = {
                name: {value: sums[2] for value, sums in by_value.items()}
                for name, by_value in previous_traffic.items()
            }
    totals = _totals(traffic_totals, contact_totals[0] if contact_totals else 0, sales[0] if sales else None)
    breakdowns: dict[str, list[BreakdownRow]] = {}
    for name in DIMENSIONS:
        merged: dict[str, list[int]] = defaultdict(lambda: [0] * 6)
        for value, sums in traffic[name].items():
            merged[value][:5] = sums
        for value, sums in contacts[name].items():
            merged[value][5] = sums[0]
        # A value with page views only (pages reached inside a visit that started elsewhere) has nothing to show
        # in a table of visitors, visits and new contacts: it is left out rather than shown as a row of zeros.
        kept = [(value, sums) for value, sums in merged.items() if sums[0] or sums[2] or sums[5]]
        rows = sorted(kept, key=lambda item: (-item[1][0], -item[1][2], -item[1][5], item[0]))
        breakdowns[name] = [
            BreakdownRow(
                value=value,
                visitors=sums[0],
                entries=sums[2],
                new_visitors=sums[1],
                new_contacts=sums[5],
                previous_entries=previous_entries.get(name, {}).get(value, 0) if q.compare else None,
            )
            for value, sums in rows[:TOP_ROWS]
        ]
    return Overview(q, totals, previous, series[0], breakdowns, currency, series[1] if q.compare else None)


def _series(session: Session, periods: list[ReportQuery], currency: str | None) -> list[list[SeriesPoint]]:
    """Each period's numbers day by day, every day of it (zero-filled), from the day rows of one range read
    per table (the periods are adjacent)."""
    q, days = periods[0], (min(p.start for p in periods), max(p.end for p in periods))
    by_day: dict[date, list[int]] = defaultdict(lambda: [0] * 6)
    for row in _daily(session, q, days, traffic=True):
        by_day[row[0]][:4] = [_int(v) for v in row[1:]]
    for row in _daily(session, q, days, traffic=False):
        by_day[row[0]][4] = _int(row[1])
    for row in _purchase_sums(session, q, currency, groups=["day"], days=days) if currency else []:
        by_day[row[0]][5] = _int(row[2])
    return [
        [
            SeriesPoint(day, *by_day.get(day, [0] * 6))
            for day in (p.start + timedelta(days=offset) for offset in range(p.days))
        ]
        for p in periods
    ]


def _daily(session: Session, q: ReportQuery, days: tuple[date, date], *, traffic: bool) -> list[Any]:
    """The query's measures by day over ``days`` (first, last), from the day rows of the narrowest table that
    holds its filters."""
    shape = narrowest_shape(q.filters)
    clauses, params = _filters(session, q, traffic=traffic)
    clauses.append("r.span = 'day' AND r.day BETWEEN :start AND :end")
    if not traffic:
        clauses.append("r.touch = 'first'")
    params.update(start=days[0], end=days[1])
    measures = _SERIES_MEASURES if traffic else _CONTACT_MEASURES
    statement = f"""SELECT r.day, {", ".join(f"sum({_SUMMED.get(m, 'r.' + m)})::bigint" for m in measures)}
        FROM {shape.traffic_table if traffic else shape.contact_table} r
        WHERE {" AND ".join(clauses)} GROUP BY r.day"""  # noqa: S608 - names from SHAPES and DIMENSIONS
    return list(session.execute(text(statement), params).all())


def _totals(traffic: list[int] | None, new_contacts: int, sales: Any = None) -> Totals:
    visitors, new_visitors, entries, pageviews, cookieless_visitors = traffic or [0, 0, 0, 0, 0]
    purchases, revenue, new_customers = (_int(v) for v in (sales or (0, 0, 0)))
    return Totals(
        visitors, new_visitors, entries, pageviews, new_contacts, purchases, revenue, new_customers, cookieless_visitors
    )


def attribution(
    session: Session,
    q: ReportQuery,
    model: TouchModel = "first",
    group_by: list[str] | tuple[str, ...] = DEFAULT_ATTRIBUTION_GROUPS,
) -> list[AttributionRow]:
    """Visitors, new contacts, conversion rate and median days to contact per group of dimensions, by the
    contacts' first or last touch; most new contacts first."""
    errors = {name: "unknown dimension" for name in group_by if name not in DIMENSIONS}
    if model not in ("first", "last"):
        errors["model"] = "must be first or last"
    if not group_by:
        errors["group_by"] = "name at least one dimension"
    if errors:
        raise InvalidQuery("the attribution query is invalid", errors)
    _check_site(session, q.site_id)
    groups = [name for name in DIMENSIONS if name in group_by]  # fixed names, in report order
    keys = ", ".join(f"r.{name}" for name in groups)
    measure = "new_visitors" if model == "first" else "entries"
    shape = narrowest_shape([*groups, *q.filters])
    span = cover(q.start, q.end).params()
    traffic_clauses, traffic_params = _filters(session, q, traffic=True)
    contact_clauses, contact_params = _filters(session, q, traffic=False)
    names = ", ".join(groups)
    statement = f"""WITH visitors AS (
            SELECT {keys}, sum(r.{measure} * b.sign)::bigint AS visitors
            FROM {covered(shape.traffic_table, traffic_clauses)} GROUP BY {keys}),
        histogram AS (
            SELECT {keys}, r.days_to_contact AS days, sum(r.contacts * b.sign)::bigint AS contacts
            FROM {covered(shape.contact_table, [*contact_clauses, "r.touch = :touch"])}
            GROUP BY {keys}, r.days_to_contact),
        contacts AS ({median_of_histogram("histogram", groups)})
        SELECT {names}, coalesce(v.visitors, 0), coalesce(c.contacts, 0), c.median
        FROM visitors v FULL JOIN contacts c USING ({names})"""  # noqa: S608 - names from SHAPES and DIMENSIONS
    with _report_timeout(session):
        # One statement, the median included: the (group, days) histogram never leaves the database.
        merged = session.execute(text(statement), {**traffic_params, **contact_params, **span, "touch": model}).all()
        currency = revenue_currency(session, q)
        sales = _purchase_sums(session, q, currency, groups=groups, touch=model) if currency else []
    width = len(groups)
    sales_of = {tuple(row[:width]): (_int(row[width + 1]), _int(row[width + 2])) for row in sales}
    rows = []
    for row in merged:
        key, (visitors, contacts, median) = tuple(row[:width]), row[width:]
        revenue, customers = sales_of.pop(key, (0, 0))
        if visitors or contacts or revenue or customers:
            rows.append(
                AttributionRow(
                    dict(zip(groups, key, strict=True)), visitors, contacts,
                    None if median is None else float(median), revenue, customers, currency,
                )
            )  # fmt: skip
    for key, (revenue, customers) in sales_of.items():  # bought, with neither visitors nor contacts in the range
        if revenue or customers:
            rows.append(AttributionRow(dict(zip(groups, key, strict=True)), 0, 0, None, revenue, customers, currency))
    return sorted(rows, key=lambda row: (-row.new_contacts, -row.visitors, tuple(row.group.values())))


def median_of_histogram(histogram: str, groups: list[str]) -> str:
    """SQL: per group of ``histogram`` (a relation of ``groups``, ``days``, ``contacts``), its contacts and the
    median of their days (the mean of the middle two contacts, or the middle one), over the contacts whose days
    are known (``days >= 0``); found by walking the running count in days order, not by listing contacts."""
    names = ", ".join(groups)
    known = "FILTER (WHERE days >= 0 AND contacts > 0)"
    at_rank = "min(days) FILTER (WHERE days >= 0 AND contacts > 0 AND upto > {rank})"
    return f"""SELECT {names}, sum(contacts)::bigint AS contacts,
            ({at_rank.format(rank="(known - 1) / 2")} + {at_rank.format(rank="known / 2")}) / 2.0 AS median
        FROM (SELECT h.*, (sum(contacts) {known} OVER (PARTITION BY {names} ORDER BY days))::bigint AS upto,
                (sum(contacts) {known} OVER (PARTITION BY {names}))::bigint AS known
            FROM {histogram} h) ranked
        GROUP BY {names}"""  # noqa: S608 - names from DIMENSIONS


LIVE_MAX_MINUTES = 60


def live(
    session: Session,
    site_id: UUID | None,
    minutes: int = 30,
    *,
    filters: dict[str, str] | None = None,
    include_bots: bool = False,
) -> LivePanel:
    """Visitors and page views of the last ``minutes`` (at most an hour) and the top pages, from recent
    visits through the (tenant, time) index, under the overview's dimension filters (each visit's own, as
    the rollups count it); bots left out unless asked."""
    wanted = filters or {}
    errors = {name: f"unknown dimension; known: {', '.join(DIMENSIONS)}" for name in wanted if name not in DIMENSIONS}
    if not 1 <= minutes <= LIVE_MAX_MINUTES:
        errors["minutes"] = f"must be 1..{LIVE_MAX_MINUTES}"
    if errors:
        raise InvalidQuery("the live query is invalid", errors)
    _check_site(session, site_id)
    clauses = [
        "tenant_id = :tenant_id",
        "occurred_at > now() - make_interval(mins => :minutes)",
        "occurred_at <= now() + interval '1 minute'",
    ]
    params: dict[str, Any] = {"tenant_id": current_tenant_id(session), "minutes": minutes}
    if not include_bots:
        clauses.append("NOT is_bot")
    if site_id is not None:
        clauses.append("site_id = :site_id")
        params["site_id"] = site_id
    expressions = visit_dimension_sql("visits")
    for name in DIMENSIONS:  # fixed expressions by name; the values are bound
        if name in wanted:
            clauses.append(f"{expressions[name]} = :filter_{name}")
            params[f"filter_{name}"] = wanted[name]
    recent = f"FROM visits WHERE {' AND '.join(clauses)}"
    with _report_timeout(session):
        visitors, pageviews = session.execute(
            text(f"SELECT count(DISTINCT visitor_id), count(*) FILTER (WHERE type = 'pageview') {recent}"),
            params,
        ).one()
        pages = session.execute(
            text(
                f"""SELECT path, count(*) {recent} AND type = 'pageview'
                    GROUP BY path ORDER BY count(*) DESC, path LIMIT 10"""
            ),
            params,
        ).all()
    return LivePanel(int(visitors), int(pageviews), [(str(path), int(count)) for path, count in pages])
