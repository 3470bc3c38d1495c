"""Tenant API for a person's rights and the retention policy: export a person, erase a person (with the status
of the erasure), confirm or decline a member's own request, and read or set how long visitors are kept."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated
from uuid import UUID

from litestar import Controller, get, post, put
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter
from litestar.response import Stream

from api.openapi import AUTH, BODY, problems
from api.privacy.schemas import ErasurePublic, PersonExport, RetentionPolicy, RetentionUpdate
from tenants.accounts.service import ApiCaller
from tenants.isolation import tenant_session
from tenants.models import ErasureStatus, Scope
from tenants.privacy import erase, retention
from tenants.privacy.export import export_person
from tenants.privacy.person import find_person

__all__ = ["PrivacyController", "person_export_stream"]


def person_export_stream(tenant_id: UUID, contact_id: UUID, filename: str) -> Stream:
    """The export as a download, read in its own transaction while it is sent (the caller checked the contact)."""

    def chunks() -> Iterator[bytes]:
        with tenant_session(tenant_id) as session:
            yield from export_person(session, find_person(session, contact_id))

    return Stream(
        chunks(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


class PrivacyController(Controller):
    path = "/api/v1"
    tags = ["privacy"]
    security = [{"apiKey": []}]

    @get(
        "/contacts/{contact_id:uuid}/export",
        sync_to_thread=True,
        summary="Export everything about a person (GDPR art. 15 and 20)",
        media_type="application/json",
        responses={
            200: ResponseSpec(PersonExport, description="The person's rows, streamed", generate_examples=False),
            **problems(*AUTH, 400, 404),
        },
    )
    def export_contact(self, caller: NamedDependency[ApiCaller], contact_id: FromPath[UUID]) -> Stream:
        """Every row of every table that names the contact, the contacts merged into it, or its devices: the
        contact, devices (visitors), visits, form submissions, link clicks, identity events, memberships,
        purchases, referrals… as JSON, streamed. Credentials (password hashes) are left out."""
        with caller.session(Scope.READ) as session:
            find_person(session, contact_id)
        return person_export_stream(caller.tenant_id, contact_id, f"contact-{contact_id}.json")

    @post(
        "/contacts/{contact_id:uuid}/erase",
        status_code=202,
        sync_to_thread=True,
        summary="Erase a person (GDPR art. 17)",
        responses=problems(*AUTH, 400, 404, 409),
    )
    def erase_contact(self, caller: NamedDependency[ApiCaller], contact_id: FromPath[UUID]) -> ErasurePublic:
        """Queued for a worker; follow it at ``GET /api/v1/erasures/{id}``. Deletes the person's fields, devices,
        visits, form submissions, link clicks, memberships and sessions, referrals; keeps purchases and
        commissions under an anonymous placeholder. An erasure already open for the contact is returned (a
        member's request is confirmed by this). 409 for a contact erased already, or merged into another
        (erase that one). Needs ``admin``."""
        with caller.session(Scope.ADMIN) as session:
            requested = erase.request_erasure(
                session, contact_id, via="api", requested_by=f"api_key:{caller.api_key_id}"
            )
            return ErasurePublic.of(requested)

    @get("/erasures", sync_to_thread=True, summary="List erasures", responses=problems(*AUTH, 400))
    def list_erasures(
        self,
        caller: NamedDependency[ApiCaller],
        status: Annotated[ErasureStatus | None, Parameter(description="Only with this status")] = None,
        contact_id: Annotated[UUID | None, Parameter(description="Only this contact's")] = None,
        limit: Annotated[int, Parameter(ge=1, le=200, description="At most this many")] = 50,
    ) -> list[ErasurePublic]:
        """Newest first; ``status=awaiting_confirmation`` lists members' requests to confirm."""
        with caller.session(Scope.READ) as session:
            found = erase.list_erasures(session, status=status, contact_id=contact_id, limit=limit)
            return [ErasurePublic.of(e) for e in found]

    @get(
        "/erasures/{erasure_id:uuid}",
        sync_to_thread=True,
        summary="An erasure's status and report",
        responses=problems(*AUTH, 400, 404),
    )
    def get_erasure(self, caller: NamedDependency[ApiCaller], erasure_id: FromPath[UUID]) -> ErasurePublic:
        with caller.session(Scope.READ) as session:
            return ErasurePublic.of(erase.get_erasure(session, erasure_id))

    @post(
        "/erasures/{erasure_id:uuid}/confirm",
        status_code=202,
        sync_to_thread=True,
        summary="Confirm a member's erasure request",
        responses=problems(*AUTH, 400, 404, 409),
    )
    def confirm_erasure(self, caller: NamedDependency[ApiCaller], erasure_id: FromPath[UUID]) -> ErasurePublic:
        """The erasure is queued for a worker; 409 unless it awaits confirmation. Needs ``admin``."""
        with caller.session(Scope.ADMIN) as session:
            confirmed = erase.confirm_erasure(session, erasure_id, confirmed_by=f"api_key:{caller.api_key_id}")
            return ErasurePublic.of(confirmed)

    @post(
        "/erasures/{erasure_id:uuid}/decline",
        status_code=200,
        sync_to_thread=True,
        summary="Decline a member's erasure request",
        responses=problems(*AUTH, 400, 404, 409),
    )
    def decline_erasure(self, caller: NamedDependency[ApiCaller], erasure_id: FromPath[UUID]) -> ErasurePublic:
        """Nothing is erased (a legal reason to keep the data, GDPR art. 17(3)); 409 unless it awaits
        confirmation. Needs ``admin``."""
        with caller.session(Scope.ADMIN) as session:
            declined = erase.decline_erasure(session, erasure_id, declined_by=f"api_key:{caller.api_key_id}")
            return ErasurePublic.of(declined)

    @get("/privacy/retention", sync_to_thread=True, summary="The retention policy", responses=problems(*AUTH))
    def get_retention(self, caller: NamedDependency[ApiCaller]) -> RetentionPolicy:
        """How long visitors and visits are kept, and what the expiry job last deleted."""
        with caller.session(Scope.READ) as session:
            return RetentionPolicy.of(retention.get_policy(session))

    @put(
        "/privacy/retention",
        sync_to_thread=True,
        summary="Set the retention policy",
        responses=problems(*AUTH, *BODY),
    )
    def set_retention(self, caller: NamedDependency[ApiCaller], data: JSONBody[RetentionUpdate]) -> RetentionPolicy:
        """Applied by the next expiry run (hourly). Needs ``admin``."""
        with caller.session(Scope.ADMIN) as session:
            policy = retention.set_policy(
                session,
                anonymous_visitor_months=data.anonymous_visitor_months,
                identified_visit_months=data.identified_visit_months,
            )
            return RetentionPolicy.of(policy)
