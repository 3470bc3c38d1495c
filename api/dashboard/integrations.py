"""Integrations → Ad platforms: connect Meta, Google Ads (OAuth with PKCE) and TikTok, see each one's status
(paused and why) and its last deliveries, send a test event. Over the REST API's services and request structs;
owners and admins change them, everyone sees them; tokens are write-only here too."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter
from litestar.response import Redirect, Template

from api.conversions.schemas import IntegrationCreate, IntegrationUpdate
from api.dashboard.auth import StaffCaller, requires
from api.dashboard.manage_input import NO_REFUSAL, Refusal, parsed, shown_again
from api.dashboard.rendering import redirect, screen
from api.web.csrf import checked_form
from tenants.conversions import delivery, google_oauth, integrations
from tenants.conversions import service as conversions
from tenants.models import Platform, UserRole
from tenants.settings import get_settings
from tenants.tracking import sites

__all__ = ["IntegrationsController"]

PATH = "/app/integrations"
CALLBACK = f"{PATH}/google/callback"
SETTINGS = ("pixel_id", "pixel_code", "customer_id", "login_customer_id", "test_event_code")
TOKENS = ("access_token", "refresh_token")
ACTIONS = ("lead", "purchase", "complete_registration")
Query = Annotated[str | None, Parameter(required=False)]


def _values(form: dict[str, str], *, creating: bool) -> dict[str, Any]:
    """The form as the API's struct takes it: blanks left out (a blank token field keeps the stored token)."""
    values: dict[str, Any] = {name: form[name].strip() for name in (*SETTINGS, *TOKENS) if form.get(name, "").strip()}
    actions = {kind: form[f"action_{kind}"].strip() for kind in ACTIONS if form.get(f"action_{kind}", "").strip()}
    if actions:
        values["conversion_actions"] = actions
    values["events"] = {kind: form.get(f"event_{kind}") == "on" for kind in ACTIONS} | {
        "custom": [
            name.strip() for name in form.get("event_custom", "").replace(",", "\n").splitlines() if name.strip()
        ]
    }
    if form.get("name", "").strip():
        values["name"] = form["name"].strip()
    if creating:
        values["platform"] = form.get("platform", "")
        if form.get("site_id"):
            values["site_id"] = form["site_id"]
    return values


def _callback_url() -> str:
    return f"{get_settings().base_url}{CALLBACK}"


class IntegrationsController(Controller):
    path = PATH
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    async def _list(
        self, request: Request[Any, Any, Any], staff: StaffCaller, refusal: Refusal = NO_REFUSAL
    ) -> Template:
        def read() -> dict[str, Any]:
            with staff.session() as session:
                return {"integrations": integrations.list_integrations(session), "sites": sites.list_sites(session)}

        return screen(
            request,
            staff,
            "dashboard/integrations/list.html",
            section="ad-platforms",
            title="Ad platforms",
            status=refusal.status,
            refusal=refusal,
            can_change=staff.can(UserRole.ADMIN),
            **await anyio.to_thread.run_sync(read),
        )

    async def _detail(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        integration_id: UUID,
        refusal: Refusal = NO_REFUSAL,
        test: delivery.SentTestEvent | None = None,
    ) -> Template:
        def read() -> dict[str, Any]:
            with staff.session() as session:
                integration = integrations.get_integration(session, integration_id)
                page = conversions.list_conversions(session, limit=20)
                recent = [
                    (conversion, d) for conversion, found in page.items for d, i in found if i.id == integration.id
                ]
                return {"integration": integration, "recent": recent}

        context = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/integrations/integration.html",
            section="ad-platforms",
            title=context["integration"].name,
            status=refusal.status,
            refusal=refusal,
            test=test,
            can_change=staff.can(UserRole.ADMIN),
            **context,
        )

    @get("/")
    async def list_integrations(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return await self._list(request, staff)

    @post("/", guards=[requires(UserRole.ADMIN)], status_code=303)
    async def create(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        values = _values(await checked_form(request), creating=True)

        def store() -> UUID:
            data = parsed("integration", values, IntegrationCreate)
            settings, tokens = data.split()
            with staff.session() as session:
                integration = integrations.create_integration(
                    session,
                    Platform(data.platform),
                    name=data.name,
                    site_id=data.site_id,
                    settings=settings,
                    secrets=tokens,
                    events=data.event_rules(),
                )
                staff.audit(session, "integration.create", f"integration:{integration.id}", platform=data.platform)
                return integration.id

        # A refused form names the fields; what was typed (a token among it) is never written back into the page.
        async with shown_again(lambda refusal: self._list(request, staff, refusal)):
            integration_id = await anyio.to_thread.run_sync(store)
        return redirect(f"{PATH}/{integration_id}", "Integration saved")

    @get("/{integration_id:uuid}")
    async def show(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], integration_id: FromPath[UUID]
    ) -> Template:
        return await self._detail(request, staff, integration_id)

    @post("/{integration_id:uuid}", guards=[requires(UserRole.ADMIN)], status_code=303)
    async def update(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], integration_id: FromPath[UUID]
    ) -> Redirect:
        values = _values(await checked_form(request), creating=False)

        def store() -> None:
            data = parsed("integration", values, IntegrationUpdate)
            settings, tokens = data.split()
            with staff.session() as session:
                integrations.update_integration(
                    session,
                    integration_id,
                    name=data.name if isinstance(data.name, str) else None,
                    settings=settings,
                    secrets=tokens,
                    events=data.event_rules(),
                )
                staff.audit(session, "integration.update", f"integration:{integration_id}", tokens=bool(tokens))

        async with shown_again(lambda refusal: self._detail(request, staff, integration_id, refusal)):
            await anyio.to_thread.run_sync(store)
        return redirect(f"{PATH}/{integration_id}", "Integration saved")

    @post("/{integration_id:uuid}/test", guards=[requires(UserRole.ADMIN)], status_code=200)
    async def send_test_event(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], integration_id: FromPath[UUID]
    ) -> Template:
        await checked_form(request)

        def send() -> delivery.SentTestEvent:
            with staff.session() as session:
                return delivery.send_test_event(session, integration_id)

        async with shown_again(lambda refusal: self._detail(request, staff, integration_id, refusal)):
            sent = await anyio.to_thread.run_sync(send)
        return await self._detail(request, staff, integration_id, test=sent)

    @post("/{integration_id:uuid}/google/connect", guards=[requires(UserRole.ADMIN)], status_code=303)
    async def connect_google(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], integration_id: FromPath[UUID]
    ) -> Redirect:
        """To Google's consent page (a POST, so a link cannot start a connection on someone's behalf)."""
        await checked_form(request)

        def start() -> str:
            with staff.session() as session:
                return google_oauth.authorization_url(session, integration_id, _callback_url())

        async with shown_again(lambda refusal: self._detail(request, staff, integration_id, refusal)):
            url = await anyio.to_thread.run_sync(start)
        return Redirect(url, status_code=303)

    @get("/google/callback", guards=[requires(UserRole.ADMIN)])
    async def google_callback(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        oauth_state: Annotated[str | None, Parameter(query="state", required=False)] = None,
        code: Query = None,
        error: Query = None,
    ) -> Redirect | Template:
        state = oauth_state
        if error or not code or not state:
            refusal = Refusal(f"Google did not connect the account: {error or 'no code came back'}", 422)
            return await self._list(request, staff, refusal)

        def finish() -> UUID:
            with staff.session() as session:
                integration = google_oauth.finish_connect(session, state=state, code=code, redirect_uri=_callback_url())
                staff.audit(session, "integration.connect", f"integration:{integration.id}")
                return integration.id

        async with shown_again(lambda refusal: self._list(request, staff, refusal)):
            integration_id = await anyio.to_thread.run_sync(finish)
        return redirect(f"{PATH}/{integration_id}", "Google Ads connected")
