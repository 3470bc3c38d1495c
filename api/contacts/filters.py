"""Reading a contact list's filters from a query string: one reading for the REST list, the dashboard's list
and its CSV export, so the same address means the same contacts everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from tenants.contacts.service import ContactFilter
from tenants.errors import Invalid
from tenants.tracking.segments import FILTERED_DIMENSIONS, TouchFilter

__all__ = ["FIELD_PREFIX", "contact_filter", "touch_filter"]

FIELD_PREFIX = "field."
"""``field.<key>=<value>``: the custom field ``key`` equals ``value``."""


def _day(params: Mapping[str, str], name: str) -> date | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise Invalid("the date is invalid", {name: "must be a date like 2026-11-26"}) from None


def _given(params: Mapping[str, str], name: str) -> str | None:
    value = (params.get(name) or "").strip()
    return value or None


def touch_filter(params: Mapping[str, str]) -> TouchFilter:
    """``touch`` (first or last, default first) and the dimensions ``channel``, ``source``, ``medium``,
    ``campaign``, ``partner``; blank values are not filters."""
    dimensions = {name: _given(params, name) for name in FILTERED_DIMENSIONS}
    return TouchFilter(touch=_given(params, "touch") or "first", **dimensions)


def contact_filter(params: Mapping[str, str]) -> ContactFilter:
    """The filters of a contact list: ``q``, the touch filter, ``evidence``, ``field.<key>``, ``created_from``
    and ``created_to`` (UTC days, inclusive)."""
    fields = {
        key.removeprefix(FIELD_PREFIX): value
        for key, value in params.items()
        if key.startswith(FIELD_PREFIX) and value.strip()
    }
    return ContactFilter(
        query=_given(params, "q"),
        touch=touch_filter(params),
        evidence=_given(params, "evidence"),
        fields=fields,
        created_from=_day(params, "created_from"),
        created_to=_day(params, "created_to"),
    )
