"""Filtering people by where they came from: a first- or last-touch filter on the attribution dimensions
(channel, source, medium, campaign, partner), as SQL conditions over a stored touch.

Contacts and visitors both keep ``first_touch`` and ``last_touch``; the dimensions of a touch come from the one
definition the rollups use (``tenants.reports.dimensions``), so a list filtered here counts exactly what the
attribution report shows for the same row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import TextClause, bindparam, text

from tenants.errors import Invalid
from tenants.reports.dimensions import DIMENSIONS, touch_dimension_sql, visit_dimension_sql

__all__ = ["FILTERED_DIMENSIONS", "TOUCHES", "TouchFilter", "touch_conditions", "visit_conditions"]

TOUCHES = ("first", "last")
FILTERED_DIMENSIONS = ("channel", "source", "medium", "campaign", "partner")
"""The dimensions a list filters on (the Attribution screen links its rows with these names)."""


@dataclass(frozen=True)
class TouchFilter:
    """Only rows whose ``touch`` (first or last) has these dimension values; None means any."""

    touch: str = "first"
    channel: str | None = None
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    partner: str | None = None

    def __post_init__(self) -> None:
        if self.touch not in TOUCHES:
            raise Invalid("the touch is unknown", {"touch": "must be first or last"})

    def values(self) -> dict[str, str]:
        """The dimensions asked for, by name."""
        return {
            f.name: v
            for f in fields(self)
            if f.name in FILTERED_DIMENSIONS and (v := getattr(self, f.name)) is not None
        }


def _conditions(expressions: dict[str, str], wanted: dict[str, str], prefix: str) -> list[TextClause]:
    conditions = []
    for name, value in wanted.items():
        parameter = f"{prefix}_{name}"
        # Bound parameters only; the dimension SQL itself is fixed text from the reports definition.
        conditions.append(text(f"({expressions[name]}) = :{parameter}").bindparams(bindparam(parameter, value)))
    return conditions


def touch_conditions(touch_filter: TouchFilter, *, table: str) -> list[TextClause]:
    """Conditions on ``table``'s ``first_touch`` or ``last_touch`` column (``contacts`` or ``visitors``)."""
    wanted = touch_filter.values()
    if not wanted:
        return []
    column = f"{table}.{touch_filter.touch}_touch"
    # A never-touched row counts as direct, as in the rollups: no "IS NOT NULL" here.
    return _conditions(touch_dimension_sql(column), wanted, "touch")


def visit_conditions(wanted: dict[str, Any]) -> list[TextClause]:
    """Conditions on the attribution dimensions of a ``visits`` row (the table, unaliased)."""
    given = {name: str(value) for name, value in wanted.items() if value is not None}
    unknown = set(given) - set(DIMENSIONS)
    if unknown:
        raise Invalid("a filter is unknown", dict.fromkeys(unknown, "is not a visit dimension"))
    return _conditions(visit_dimension_sql("visits"), given, "visit") if given else []
