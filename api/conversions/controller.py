"""Tenant API: ad-platform integrations (tokens write-only)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from api.conversions.schemas import (
    ConversionPage,
    ConversionPublic,
    IntegrationCreate,
    IntegrationPublic,
    IntegrationUpdate,
    TestEventResult,
)
from api.openapi import AUTH, BODY, creates, problems
from tenants.accounts.service import ApiCaller
from tenants.conversions import delivery, integrations
from tenants.conversions import service as conversions
from tenants.models import Platform, Scope

__all__ = ["ConversionsController", "IntegrationsController"]


class IntegrationsController(Controller):
    path = "/api/v1/integrations"
    tags = ["conversions"]
    security = [{"apiKey": []}]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Connect an ad platform",
        responses=problems(*AUTH, *BODY),
        operation_class=creates("integration_id", "getIntegration", "updateIntegration", "removeIntegration"),
        response_description="The integration (its token is never shown)",
    )
    def create_integration(
        self, caller: NamedDependency[ApiCaller], data: JSONBody[IntegrationCreate]
    ) -> IntegrationPublic:
        """422 with each field at fault: a missing pixel or customer id, a setting of another platform, a Google
        conversion without its conversion action, a site that does not exist. Without a token it is created
        ``paused`` until one is stored (needs ``admin``)."""
        settings, secrets = data.split()
        with caller.session(Scope.ADMIN) as session:
            integration = integrations.create_integration(
                session,
                Platform(data.platform),
                name=data.name,
                site_id=data.site_id,
                settings=settings,
                secrets=secrets,
                events=data.event_rules(),
            )
            return IntegrationPublic.of(integration)

    @get(sync_to_thread=True, summary="List integrations", responses=problems(*AUTH))
    def list_integrations(self, caller: NamedDependency[ApiCaller]) -> list[IntegrationPublic]:
        """Oldest first, each with its status (``paused`` and why)."""
        with caller.session(Scope.READ) as session:
            return [IntegrationPublic.of(i) for i in integrations.list_integrations(session)]

    @get(
        "/{integration_id:uuid}",
        sync_to_thread=True,
        summary="Get an integration",
        responses=problems(*AUTH, 400, 404),
    )
    def get_integration(self, caller: NamedDependency[ApiCaller], integration_id: FromPath[UUID]) -> IntegrationPublic:
        """With its status: ``paused`` with the reason while the platform refuses its token."""
        with caller.session(Scope.READ) as session:
            return IntegrationPublic.of(integrations.get_integration(session, integration_id))

    @patch(
        "/{integration_id:uuid}",
        sync_to_thread=True,
        summary="Change an integration",
        responses=problems(*AUTH, *BODY, 404),
    )
    def update_integration(
        self, caller: NamedDependency[ApiCaller], integration_id: FromPath[UUID], data: JSONBody[IntegrationUpdate]
    ) -> IntegrationPublic:
        """Only what is given changes; a new token replaces the stored one and ends a pause (needs ``admin``)."""
        settings, secrets = data.split()
        changes = {} if isinstance(data.site_id, msgspec.UnsetType) else {"site_id": data.site_id}
        with caller.session(Scope.ADMIN) as session:
            integration = integrations.update_integration(
                session,
                integration_id,
                name=None if isinstance(data.name, msgspec.UnsetType) else data.name,
                settings=settings,
                secrets=secrets,
                events=data.event_rules(),
                **changes,
            )
            return IntegrationPublic.of(integration)

    @post(
        "/{integration_id:uuid}/test",
        status_code=200,
        sync_to_thread=True,
        summary="Send a test event",
        responses=problems(*AUTH, 400, 404, 422),
    )
    def send_test_event(self, caller: NamedDependency[ApiCaller], integration_id: FromPath[UUID]) -> TestEventResult:
        """A test lead through the same sender as real conversions: Meta and TikTok receive it with the
        integration's ``test_event_code`` (422 without one: it would count as real), Google validates it
        (``validateOnly``). An expired token pauses the integration, as for real conversions (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            sent = delivery.send_test_event(session, integration_id)
            return TestEventResult(delivered=sent.delivered, detail=sent.detail)

    @delete(
        "/{integration_id:uuid}",
        status_code=204,
        sync_to_thread=True,
        summary="Disconnect an integration",
        responses=problems(*AUTH, 400, 404),
    )
    def remove_integration(self, caller: NamedDependency[ApiCaller], integration_id: FromPath[UUID]) -> None:
        """Its token is deleted with it; nothing more is sent there (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            integrations.delete_integration(session, integration_id)


class ConversionsController(Controller):
    path = "/api/v1/conversions"
    tags = ["conversions"]
    security = [{"apiKey": []}]

    @get(sync_to_thread=True, summary="List conversions with their deliveries", responses=problems(*AUTH, 400, 422))
    def list_conversions(
        self,
        caller: NamedDependency[ApiCaller],
        contact_id: Annotated[UUID | None, Parameter(description="Only this contact's conversions")] = None,
        cursor: Annotated[str | None, Parameter(description="`next_cursor` of a page: the older conversions")] = None,
        limit: Annotated[int, Parameter(ge=1, le=conversions.MAX_PAGE, description="Page size")] = 50,
    ) -> ConversionPage:
        """Newest first; each with its status per integration (queued, sent, failed or skipped, with the reason)
        and the touch each platform got. 422 for a cursor this API did not return."""
        with caller.session(Scope.READ) as session:
            page = conversions.list_conversions(session, contact_id=contact_id, cursor=cursor, limit=limit)
            return ConversionPage([ConversionPublic.of(c, d) for c, d in page.items], page.next_cursor)
