"""The dashboard's first screen."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.rendering import screen
from tenants.models import UserRole

__all__ = ["OverviewController"]


class OverviewController(Controller):
    path = "/app"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def overview(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return screen(request, staff, "dashboard/home.html", section="overview", title="Overview")
