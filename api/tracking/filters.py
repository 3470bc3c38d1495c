"""Reading the visitors and visits lists' filters from a query string: one reading for the REST lists and the
dashboard's Visitors and Visits screens, so the same address means the same rows everywhere.

Blank values are not filters. A value that cannot be read is :class:`InvalidQuery` (400) naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID

from api.contacts.filters import touch_filter
from tenants.errors import InvalidQuery
from tenants.reports.dimensions import MAX_VALUE_LENGTH
from tenants.tracking.history import VisitFilter, VisitorFilter
from tenants.tracking.segments import FILTERED_DIMENSIONS

__all__ = ["ANY", "VISIT_TYPES", "visit_filter", "visitor_filter"]

ANY = "any"
"""The value of a bot filter that keeps bots and people alike (the same as leaving it out on the REST API; the
dashboard leaves bots out unless asked)."""
VISIT_TYPES = ("pageview", "event")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _given(params: Mapping[str, str], name: str) -> str | None:
    value = (params.get(name) or "").strip()
    return value or None


def _refuse(name: str, reason: str) -> InvalidQuery:
    return InvalidQuery(f"the {name} filter is invalid", {name: reason})


def _uuid(params: Mapping[str, str], name: str) -> UUID | None:
    raw = _given(params, name)
    if raw is None:
        return None
    try:
        return UUID(raw)
    except ValueError:
        raise _refuse(name, "must be an id like 0190c5e4-3f0a-7b6e-9d1e-2a4b6c8d0e1f") from None


def _flag(params: Mapping[str, str], name: str) -> bool | None:
    raw = _given(params, name)
    if raw is None:
        return None
    if raw.lower() not in _BOOLEANS:
        raise _refuse(name, "must be true or false")
    return _BOOLEANS[raw.lower()]


def _bots(params: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    raw = _given(params, name)
    if raw is None:
        return default
    if raw.lower() == ANY:
        return None
    if raw.lower() not in _BOOLEANS:
        raise _refuse(name, f"must be true (only bots), false (no bots) or {ANY}")
    return _BOOLEANS[raw.lower()]


def _moment(params: Mapping[str, str], name: str) -> datetime | None:
    raw = _given(params, name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise _refuse(name, "must be a time like 2026-11-26T14:30:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _day_start(params: Mapping[str, str], name: str, *, after: bool = False) -> datetime | None:
    """The start of the UTC day ``name`` (of the next day with ``after``: an inclusive last day)."""
    raw = _given(params, name)
    if raw is None:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise _refuse(name, "must be a date like 2026-11-26") from None
    return datetime.combine(day + timedelta(days=1) if after else day, time.min, tzinfo=UTC)


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = _given(params, name)
    if value is not None and len(value) > MAX_VALUE_LENGTH:
        raise _refuse(name, f"must be at most {MAX_VALUE_LENGTH} characters")
    return value


def _dimensions(params: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name in FILTERED_DIMENSIONS if (value := _text(params, name)) is not None}


def _latest(*moments: datetime | None) -> datetime | None:
    given = [m for m in moments if m is not None]
    return max(given) if given else None


def _earliest(*moments: datetime | None) -> datetime | None:
    given = [m for m in moments if m is not None]
    return min(given) if given else None


def visitor_filter(params: Mapping[str, str], *, bots: bool | None = None) -> VisitorFilter:
    """``site_id``, ``is_bot`` (true, false or any; absent: ``bots``), ``identified`` (true: linked to a contact,
    false: anonymous), and ``touch`` (first or last) with the dimensions ``channel``, ``source``, ``medium``,
    ``campaign``, ``partner`` of that touch."""
    _dimensions(params)  # the lengths; touch_filter reads the values
    return VisitorFilter(
        site_id=_uuid(params, "site_id"),
        is_bot=_bots(params, "is_bot", bots),
        identified=_flag(params, "identified"),
        touch=touch_filter(params),
    )


def visit_filter(params: Mapping[str, str], *, bots: bool | None = None) -> VisitFilter:
    """``site_id``, ``visitor_id``, ``since`` / ``until`` (times; until excluded), ``from`` / ``to`` (UTC days,
    inclusive), ``utm_source``, ``utm_medium``, ``utm_campaign`` (exactly as stored), ``bot`` (true, false or any;
    absent: ``bots``), ``type`` (pageview or event), and the visit's own dimensions ``channel``, ``source``,
    ``medium``, ``campaign``, ``partner`` (as the reports count it)."""
    kind = _given(params, "type")
    if kind is not None and kind not in VISIT_TYPES:
        raise _refuse("type", "must be pageview or event")
    return VisitFilter(
        since=_latest(_moment(params, "since"), _day_start(params, "from")),
        until=_earliest(_moment(params, "until"), _day_start(params, "to", after=True)),
        site_id=_uuid(params, "site_id"),
        visitor_id=_uuid(params, "visitor_id"),
        utm_source=_given(params, "utm_source"),
        utm_medium=_given(params, "utm_medium"),
        utm_campaign=_given(params, "utm_campaign"),
        is_bot=_bots(params, "bot", bots),
        type=kind,
        dimensions=_dimensions(params),
    )
