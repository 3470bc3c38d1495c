"""Attribution: which channels, sources, mediums and campaigns (or partner codes) bring visitors and contacts,
by first or last touch, each number a link to the contacts behind it, and the table as CSV.

Each level of the tree is asked of the report service on its own (channel, then channel + source, …) so every row,
its median included, is the service's exact answer for that group rather than a sum made here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.response import Template

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.rendering import screen
from api.dashboard.report_view import PRESETS, ReportView, read_report_view
from api.web.charts import format_number
from api.web.downloads import csv_download
from tenants.errors import DomainError, ReportTimedOut
from tenants.models import UserRole
from tenants.reports.service import AttributionRow, TouchModel, attribution

__all__ = ["AttributionController"]

MODELS = {"first": "First touch", "last": "Last touch"}
GROUPINGS: dict[str, tuple[str, list[str]]] = {
    "channel": ("Channel → source → medium → campaign", ["channel", "source", "medium", "campaign"]),
    "partner": ("Partner code", ["partner"]),
}
NOT_SET = "(not set)"


@dataclass
class TreeRow:
    """One row of the attribution table: its group at its level, the service's numbers, and its children."""

    level: int
    dimension: str
    value: str | None
    path: dict[str, str | None]
    numbers: AttributionRow
    children: list[TreeRow] = field(default_factory=list)


def _value_of(row: AttributionRow, dimension: str) -> str | None:
    return row.group.get(dimension)


def _choice(request: Request[Any, Any, Any], name: str, allowed: dict[str, Any], default: str) -> str:
    value = request.query_params.get(name) or default
    if value not in allowed:
        raise DomainError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    return value


def _tree(levels: list[list[AttributionRow]], dimensions: list[str]) -> list[TreeRow]:
    """Nest each level's rows under the row of the level above with the same leading groups."""
    roots: list[TreeRow] = []
    index: dict[tuple[str | None, ...], TreeRow] = {}
    for depth, rows in enumerate(levels):
        for numbers in rows:
            key = tuple(_value_of(numbers, d) for d in dimensions[: depth + 1])
            node = TreeRow(
                level=depth,
                dimension=dimensions[depth],
                value=key[-1],
                path=dict(zip(dimensions[: depth + 1], key, strict=True)),
                numbers=numbers,
            )
            index[key] = node
            parent = index.get(key[:-1]) if depth else None
            (parent.children if parent else roots).append(node)
    return roots


def _flatten(rows: list[TreeRow]) -> list[TreeRow]:
    flat: list[TreeRow] = []
    for row in rows:
        flat.append(row)
        flat.extend(_flatten(row.children))
    return flat


def contacts_link(view: ReportView, model: str, path: dict[str, str | None]) -> str:
    """The contact list behind a row: the same touch, the row's groups, and contacts created in the range."""
    params = {"touch": model}
    params.update({d: v for d, v in path.items() if v is not None})
    params["created_from"] = view.start.isoformat()
    params["created_to"] = view.end.isoformat()
    return "/app/contacts?" + urlencode(params)


def _model(value: str) -> TouchModel:
    return "last" if value == "last" else "first"


def _load(staff: StaffCaller, view: ReportView, model: str, grouping: str) -> list[TreeRow]:
    dimensions = GROUPINGS[grouping][1]
    with staff.session() as session:
        levels = [
            attribution(session, view.query, model=_model(model), group_by=dimensions[: depth + 1])
            for depth in range(len(dimensions))
        ]
    return _tree(levels, dimensions)


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet runs a cell that starts like a formula; a campaign name must stay text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _view(request: Request[Any, Any, Any], staff: StaffCaller, path: str) -> tuple[ReportView, str, str]:
    model = _choice(request, "model", MODELS, "first")
    grouping = _choice(request, "group", GROUPINGS, "channel")
    with staff.session() as session:
        view = read_report_view(session, path, request.query_params, extra={"model": model, "group": grouping})
    return view, model, grouping


class AttributionController(Controller):
    path = "/app/attribution"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/", sync_to_thread=True)
    def attribution_screen(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        view, model, grouping = _view(request, staff, "/app/attribution")
        timed_out = False
        rows: list[TreeRow] = []
        try:
            rows = _load(staff, view, model, grouping)
        except ReportTimedOut:
            timed_out = True
        return screen(
            request,
            staff,
            "dashboard/attribution/attribution.html",
            section="attribution",
            title="Attribution",
            view=view,
            presets=PRESETS,
            model=model,
            models=MODELS,
            grouping=grouping,
            groupings={key: label for key, (label, _) in GROUPINGS.items()},
            columns=GROUPINGS[grouping][1],
            rows=_flatten(rows),
            timed_out=timed_out,
            not_set=NOT_SET,
            contacts_link=lambda path: contacts_link(view, model, path),
            number=format_number,
            csv_url=view.url("/app/attribution/csv"),
        )

    @get("/csv", sync_to_thread=True)
    def attribution_csv(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Response[str]:
        """The table at its finest grouping (one row per campaign, or per partner code), so its rows add up."""
        view, model, grouping = _view(request, staff, "/app/attribution")
        dimensions = GROUPINGS[grouping][1]
        with staff.session() as session:
            finest = attribution(session, view.query, model=_model(model), group_by=dimensions)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                *dimensions,
                "visitors",
                "new_contacts",
                "conversion_rate",
                "median_days_to_contact",
                "revenue_minor_units",
                "currency",
                "new_customers",
            ]
        )
        for row in finest:
            writer.writerow(
                [
                    *(_csv_cell(_value_of(row, d)) for d in dimensions),
                    row.visitors,
                    row.new_contacts,
                    "" if row.conversion_rate is None else f"{row.conversion_rate:.4f}",
                    "" if row.median_days_to_contact is None else row.median_days_to_contact,
                    row.revenue,
                    row.currency or "",
                    row.customers,
                ]
            )
        name = f"attribution-{model}-touch-{view.start.isoformat()}-{view.end.isoformat()}.csv"
        return csv_download(out.getvalue(), name)
