"""What the report screens share: reading site, date range, comparison, filters and bots from the address bar
into a :class:`ReportQuery`, and building the links that change one of them (a row click, removing a chip, a preset).

Everything a report screen shows is in its URL, so a filtered view can be bookmarked, shared and reloaded, and
works without JavaScript; app.js only fetches the same URLs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from sqlmodel import Session

from tenants.errors import DomainError, InvalidQuery, NotFound
from tenants.reports.dimensions import DIMENSIONS
from tenants.reports.service import ReportQuery
from tenants.tracking.sites import list_sites

__all__ = ["DIMENSION_LABELS", "PRESETS", "ReportView", "read_report_view"]

PRESETS: list[tuple[str, str]] = [
    ("today", "Today"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
    ("month", "This month"),
    ("custom", "Custom range"),
]
DEFAULT_PRESET = "30d"

DIMENSION_LABELS: dict[str, tuple[str, str]] = {
    "channel": ("Channels", "Channel"),
    "source": ("Sources", "Source"),
    "medium": ("Mediums", "Medium"),
    "campaign": ("Campaigns", "Campaign"),
    "referrer": ("Referrers", "Referrer"),
    "landing_page": ("Landing pages", "Landing page"),
    "partner": ("Partner codes", "Partner code"),
    "click_platform": ("Click-id platforms", "Click-id platform"),
}
"""Each dimension's table heading and its singular (for chips)."""


def _today() -> date:
    return datetime.now(UTC).date()


def _parse_day(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise DomainError(f"the {name} date {value!r} is not a date like 2026-11-30") from None


def _range_of(preset: str, start: str | None, end: str | None, today: date) -> tuple[date, date]:
    if preset == "today":
        return today, today
    if preset in ("7d", "30d", "90d"):
        return today - timedelta(days=int(preset[:-1]) - 1), today
    if preset == "month":
        return today.replace(day=1), today
    if preset == "custom":
        if not start or not end:
            raise DomainError("a custom range needs both a from and a to date")
        return _parse_day("from", start), _parse_day("to", end)
    raise DomainError(f"unknown period {preset!r}; choose one of {', '.join(key for key, _ in PRESETS)}")


@dataclass(frozen=True)
class ReportView:
    """The report screens' state as read from the URL, and the links that change it."""

    path: str
    sites: list[tuple[UUID, str]]
    """The tenant's sites as (id, name), for the site picker."""
    site_id: UUID | None
    preset: str
    start: date
    end: date
    compare: bool
    include_bots: bool
    filters: dict[str, str]
    extra: dict[str, str] = field(default_factory=dict)
    """Parameters of one screen that its links keep (the attribution model and grouping)."""

    @property
    def query(self) -> ReportQuery:
        return ReportQuery(
            site_id=self.site_id,
            start=self.start,
            end=self.end,
            filters=dict(self.filters),
            include_bots=self.include_bots,
            compare=self.compare,
        )

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def previous_range(self) -> tuple[date, date]:
        """The period of the same length just before this one (what the comparison compares with)."""
        return self.start - timedelta(days=self.days), self.start - timedelta(days=1)

    def params(self, **changes: str | None) -> dict[str, str]:
        """This view's parameters with ``changes`` applied (``None`` drops one)."""
        current: dict[str, str] = {}
        if self.site_id:
            current["site"] = str(self.site_id)
        current["period"] = self.preset
        if self.preset == "custom":
            current["from"], current["to"] = self.start.isoformat(), self.end.isoformat()
        if not self.compare:
            current["compare"] = "off"
        if self.include_bots:
            current["bots"] = "on"
        current.update(self.filters)
        current.update(self.extra)
        for key, value in changes.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        if current.get("period") != "custom":
            current.pop("from", None)
            current.pop("to", None)
        return current

    def url(self, path: str | None = None, **changes: str | None) -> str:
        """A link to ``path`` (this screen by default) with ``changes`` applied to the current view."""
        query = urlencode(self.params(**changes))
        return f"{path or self.path}?{query}" if query else (path or self.path)

    def with_filter(self, dimension: str, value: str) -> str:
        return self.url(**{dimension: value})

    def without_filter(self, dimension: str) -> str:
        return self.url(**{dimension: None})

    @property
    def clear_filters_url(self) -> str:
        return self.url(**dict.fromkeys(self.filters))

    @property
    def chips(self) -> list[tuple[str, str, str]]:
        """The active filters as (label, value, link that removes it)."""
        return [(DIMENSION_LABELS[d][1], v, self.without_filter(d)) for d, v in self.filters.items()]

    @property
    def range_label(self) -> str:
        if self.start == self.end:
            return self.start.strftime("%-d %b %Y")
        return f"{self.start.strftime('%-d %b')} \u2013 {self.end.strftime('%-d %b %Y')}"


def read_report_view(
    session: Session,
    path: str,
    params: Mapping[str, str],
    *,
    extra: Mapping[str, str] | None = None,
    today: date | None = None,
) -> ReportView:
    """The view the URL asks for; a bad date or period is a :class:`DomainError` (400 page) that says why, and a
    site that is not the tenant's (another tenant's id included) is :class:`NotFound`."""
    sites = [(s.id, s.name) for s in list_sites(session)]
    site_id: UUID | None = None
    wanted = params.get("site")
    if wanted:
        try:
            site_id = UUID(wanted)
        except ValueError:
            raise NotFound("site not found") from None
        if all(known != site_id for known, _ in sites):
            raise NotFound("site not found")  # RLS hides another tenant's sites: theirs are unknown here too
    preset = params.get("period") or DEFAULT_PRESET
    start, end = _range_of(preset, params.get("from"), params.get("to"), today or _today())
    filters: dict[str, str] = {}
    for dimension in DIMENSIONS:
        value = params.get(dimension)
        if value:
            if len(value) > 500:
                raise DomainError(f"the {dimension} filter is longer than 500 characters")
            filters[dimension] = value
    view = ReportView(
        path=path,
        sites=sites,
        site_id=site_id,
        preset=preset,
        start=start,
        end=end,
        compare=params.get("compare", "on") != "off",
        include_bots=params.get("bots") == "on",
        filters=filters,
        extra=dict(extra or {}),
    )
    try:
        _ = view.query  # the report service's own rules for a range (order, length, earliest day)
    except InvalidQuery as invalid:
        names = {"start": "from", "end": "to"}
        reasons = "; ".join(f"{names.get(k, k)}: {v}" for k, v in invalid.errors.items())
        raise DomainError(f"{invalid.message}: {reasons}" if reasons else invalid.message) from None
    return view


def change(current: float, previous: float | None) -> dict[str, Any] | None:
    """A card's change against the previous period: the text, and whether it went up, down or nowhere."""
    if previous is None:
        return None
    if previous == 0:
        if current == 0:
            return {"text": "no change", "direction": "same"}
        return {"text": "new", "direction": "up"}
    ratio = (current - previous) / previous * 100
    if round(ratio) == 0:
        return {"text": "no change", "direction": "same"}
    sign = "+" if ratio > 0 else "\u2212"  # a minus sign, not a hyphen
    return {"text": f"{sign}{abs(round(ratio))}%", "direction": "up" if ratio > 0 else "down"}


def change_in_points(current: float | None, previous: float | None) -> dict[str, Any] | None:
    """A rate's change in percentage points (a relative change of a rate reads wrongly)."""
    if previous is None or current is None:
        return None
    points = (current - previous) * 100
    if round(points, 1) == 0:
        return {"text": "no change", "direction": "same"}
    sign = "+" if points > 0 else "\u2212"
    return {"text": f"{sign}{abs(points):.1f} pts", "direction": "up" if points > 0 else "down"}
