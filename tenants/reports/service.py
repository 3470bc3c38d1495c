"""Reports read from the daily rollups: the overview, attribution (first or last touch) and the live panel.

The dashboard and the REST API both call these; nothing here knows about HTTP. Every query runs under
``report_statement_timeout_ms`` and a cancelled one raises :class:`ReportTimedOut`.

Definitions (see docs/reports.md): *visitors* are counted once per day (the sum of daily uniques), *visits*
are entries (a hit that starts a session), *new visitors* are first hits ever (the first touch), *new
contacts* are contacts created in the range, attributed by their first touch. Contacts belong to the tenant,
not to a site, so a site filter does not narrow new contacts.
"""

from __future__ import annotations

import statistics
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
from tenants.reports.dimensions import DIMENSIONS, visit_dimension_sql
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

    def __post_init__(self) -> None:
        errors: dict[str, str] = {}
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
        return ReportQuery(self.start - length, self.end - length, self.site_id, self.filters, self.include_bots, False)


@dataclass(frozen=True)
class Totals:
    visitors: int = 0
    """Counted once per day: a visitor seen on three days of the range counts three times."""
    new_visitors: int = 0
    entries: int = 0
    """Visits: hits that start a session (the first, or more than 30 minutes after the previous)."""
    pageviews: int = 0
    new_contacts: int = 0

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


@dataclass(frozen=True)
class AttributionRow:
    group: dict[str, str]
    visitors: int
    """First touch: new visitors whose first hit had these dimensions. Last touch: visits (entries) with
    these dimensions, direct ones in the Direct row."""
    new_contacts: int
    median_days_to_contact: float | None
    """From first visit to the contact's creation, over the contacts whose first visit is known."""
    revenue: int | None = None
    customers: int | None = None

    @property
    def conversion_rate(self) -> float | None:
        return self.new_contacts / self.visitors if self.visitors else None


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


def _check_site(session: Session, site_id: UUID | None) -> None:
    """A site of another tenant (or none) is not found, like any other id."""
    if site_id is not None:
        get_site(session, site_id)


def _where(q: ReportQuery, *, traffic: bool) -> tuple[str, dict[str, Any]]:
    clauses = ["day BETWEEN :start AND :end"]
    params: dict[str, Any] = {"start": q.start, "end": q.end}
    if traffic and q.site_id is not None:
        clauses.append("site_id = :site_id")
        params["site_id"] = q.site_id
    if traffic and not q.include_bots:
        clauses.append("NOT is_bot")
    for name in DIMENSIONS:  # a fixed list of column names, so nothing given is spliced into SQL
        if name in q.filters:
            clauses.append(f"{name} = :filter_{name}")
            params[f"filter_{name}"] = q.filters[name]
    return " AND ".join(clauses), params


_SETS = ", ".join(f"({name})" for name in DIMENSIONS)
_TRAFFIC_SUMS = "sum(visitors), sum(new_visitors), sum(entries), sum(pageviews)"


def _traffic_sets(session: Session, q: ReportQuery, *, by_day: bool) -> list[Any]:
    where, params = _where(q, traffic=True)
    sets = f"(), {'(day), ' if by_day else ''}{_SETS}"
    day = "day" if by_day else "NULL::date"
    statement = f"""SELECT {day}, {", ".join(DIMENSIONS)}, {_TRAFFIC_SUMS} FROM traffic_rollups
        WHERE {where} GROUP BY GROUPING SETS ({sets})"""  # noqa: S608 - column names from DIMENSIONS
    return list(session.execute(text(statement), params).all())


def _contact_sets(session: Session, q: ReportQuery, *, by_day: bool, touch: TouchModel = "first") -> list[Any]:
    where, params = _where(q, traffic=False)
    sets = f"(), {'(day), ' if by_day else ''}{_SETS}"
    day = "day" if by_day else "NULL::date"
    statement = f"""SELECT {day}, {", ".join(DIMENSIONS)}, sum(contacts) FROM contact_rollups
        WHERE {where} AND touch = :touch GROUP BY GROUPING SETS ({sets})"""  # noqa: S608 - names from DIMENSIONS
    return list(session.execute(text(statement), {**params, "touch": touch}).all())


def _which(row: Any) -> tuple[str, Any] | None:
    """Which grouping set a row belongs to: ('day', day), (dimension, value) or None for the total (rollup
    keys are never NULL, so a NULL column means "not grouped by")."""
    if row[0] is not None:
        return "day", row[0]
    for index, name in enumerate(DIMENSIONS, start=1):
        if row[index] is not None:
            return name, row[index]
    return None


def _int(value: Any) -> int:
    return int(value or 0)


def overview(session: Session, q: ReportQuery) -> Overview:
    """Totals (and the previous period's), a zero-filled daily series and the top rows of every dimension,
    all under the query's filters; four rollup queries whatever the range."""
    _check_site(session, q.site_id)
    width = 1 + len(DIMENSIONS)
    with _report_timeout(session):
        traffic = _traffic_sets(session, q, by_day=True)
        contacts = _contact_sets(session, q, by_day=True)
        previous_traffic = _traffic_sets(session, q.previous(), by_day=False) if q.compare else []
        previous_contacts = _contact_sets(session, q.previous(), by_day=False) if q.compare else []
    totals = Totals()
    by_day: dict[date, list[int]] = defaultdict(lambda: [0] * 5)
    breakdown: dict[str, dict[str, list[int]]] = {name: defaultdict(lambda: [0] * 5) for name in DIMENSIONS}
    for row in traffic:
        sums = [_int(v) for v in row[width:]]
        which = _which(row)
        if which is None:
            totals = Totals(*sums)
        elif which[0] == "day":
            by_day[which[1]][:4] = sums
        else:
            breakdown[which[0]][which[1]][:4] = sums
    for row in contacts:
        which, count = _which(row), _int(row[width])
        if which is None:
            totals = Totals(totals.visitors, totals.new_visitors, totals.entries, totals.pageviews, count)
        elif which[0] == "day":
            by_day[which[1]][4] = count
        else:
            breakdown[which[0]][which[1]][4] = count
    previous, previous_entries = _previous(previous_traffic, previous_contacts) if q.compare else (None, {})
    series = [
        SeriesPoint(day, *by_day.get(day, [0] * 5))
        for day in (q.start + timedelta(days=offset) for offset in range(q.days))
    ]
    breakdowns: dict[str, list[BreakdownRow]] = {}
    for name in DIMENSIONS:
        rows = sorted(
            ((v, sums) for v, sums in breakdown[name].items() if any(sums)),
            key=lambda item: (-item[1][0], -item[1][2], -item[1][4], item[0]),
        )
        breakdowns[name] = [
            BreakdownRow(
                value=value,
                visitors=sums[0],
                entries=sums[2],
                new_visitors=sums[1],
                new_contacts=sums[4],
                previous_entries=previous_entries.get(name, {}).get(value, 0) if q.compare else None,
            )
            for value, sums in rows[:TOP_ROWS]
        ]
    return Overview(q, totals, previous, series, breakdowns)


def _previous(traffic: list[Any], contacts: list[Any]) -> tuple[Totals, dict[str, dict[str, int]]]:
    """The previous period's totals and its entries per dimension value."""
    width = 1 + len(DIMENSIONS)
    previous = Totals()
    entries: dict[str, dict[str, int]] = defaultdict(dict)
    for row in traffic:
        which = _which(row)
        if which is None:
            previous = Totals(*(_int(v) for v in row[width:]))
        else:
            entries[which[0]][which[1]] = _int(row[width + 2])
    for row in contacts:
        if _which(row) is None:
            previous = Totals(
                previous.visitors, previous.new_visitors, previous.entries, previous.pageviews, _int(row[width])
            )
    return previous, entries


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
    keys = ", ".join(groups)
    measure = "new_visitors" if model == "first" else "entries"
    traffic_where, traffic_params = _where(q, traffic=True)
    contact_where, contact_params = _where(q, traffic=False)
    with _report_timeout(session):
        visitors = session.execute(
            text(f"SELECT {keys}, sum({measure}) FROM traffic_rollups WHERE {traffic_where} GROUP BY {keys}"),  # noqa: S608
            traffic_params,
        ).all()
        histogram = session.execute(
            text(
                f"""SELECT {keys}, days_to_contact, sum(contacts) FROM contact_rollups
                    WHERE {contact_where} AND touch = :touch GROUP BY {keys}, days_to_contact"""  # noqa: S608
            ),
            {**contact_params, "touch": model},
        ).all()
    width = len(groups)
    visitors_of = {tuple(row[:width]): _int(row[width]) for row in visitors}
    contacts_of: dict[tuple[Any, ...], int] = defaultdict(int)
    days_of: dict[tuple[Any, ...], list[tuple[int, int]]] = defaultdict(list)
    for row in histogram:
        key, days, count = tuple(row[:width]), int(row[width]), _int(row[width + 1])
        contacts_of[key] += count
        if days >= 0 and count > 0:
            days_of[key].append((days, count))
    rows = [
        AttributionRow(
            group=dict(zip(groups, key, strict=True)),
            visitors=visitors_of.get(key, 0),
            new_contacts=contacts_of.get(key, 0),
            median_days_to_contact=_median(days_of.get(key, [])),
        )
        for key in visitors_of.keys() | contacts_of.keys()
        if visitors_of.get(key, 0) or contacts_of.get(key, 0)
    ]
    return sorted(rows, key=lambda row: (-row.new_contacts, -row.visitors, tuple(row.group.values())))


def _median(histogram: list[tuple[int, int]]) -> float | None:
    """The median of a histogram of (days, contacts)."""
    if not histogram:
        return None
    return float(statistics.median(days for days, count in sorted(histogram) for _ in range(count)))


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
    clauses = ["occurred_at > now() - make_interval(mins => :minutes)", "occurred_at <= now() + interval '1 minute'"]
    params: dict[str, Any] = {"minutes": minutes}
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
