"""Tenant API: contacts, custom fields, explicit merges, timelines, and resolving a visitor token."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from api.contacts.schemas import (
    ContactFieldCreate,
    ContactFieldPublic,
    ContactPage,
    ContactPublic,
    ContactWrite,
    MergeRequest,
)
from tenants.accounts.service import ApiCaller
from tenants.contacts import service as contacts
from tenants.identity import service as identity
from tenants.models import Scope

__all__ = ["ContactFieldsController", "ContactsController", "resolve_visitor"]


class ContactFieldsController(Controller):
    path = "/api/v1/contact-fields"
    tags = ["contacts"]
    security = [{"apiKey": []}]

    @get(sync_to_thread=True, summary="List custom contact fields")
    def list_contact_fields(self, caller: NamedDependency[ApiCaller]) -> list[ContactFieldPublic]:
        with caller.session(Scope.READ) as session:
            return [ContactFieldPublic.of(f) for f in contacts.list_fields(session)]

    @post(status_code=201, sync_to_thread=True, summary="Define a custom contact field")
    def create_contact_field(
        self, caller: NamedDependency[ApiCaller], data: JSONBody[ContactFieldCreate]
    ) -> ContactFieldPublic:
        """``sensitive`` fields render on pages only for logged-in members."""
        with caller.session(Scope.ADMIN) as session:
            field = contacts.create_field(
                session, key=data.key, label=data.label, type=data.type, sensitive=data.sensitive
            )
            return ContactFieldPublic.of(field)

    @delete("/{key:str}", status_code=204, sync_to_thread=True, summary="Remove a custom field definition")
    def remove_contact_field(self, caller: NamedDependency[ApiCaller], key: FromPath[str]) -> None:
        with caller.session(Scope.ADMIN) as session:
            contacts.delete_field(session, key)


class ContactsController(Controller):
    path = "/api/v1/contacts"
    tags = ["contacts"]
    security = [{"apiKey": []}]

    @get(sync_to_thread=True, summary="List or search contacts")
    def list_contacts(
        self,
        caller: NamedDependency[ApiCaller],
        q: Annotated[str | None, Parameter(description="start of an email, first or last name")] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(ge=1, le=contacts.MAX_PAGE)] = 50,
    ) -> ContactPage:
        with caller.session(Scope.READ) as session:
            page = contacts.list_contacts(session, query=q, cursor=cursor, limit=limit)
            return ContactPage([ContactPublic.of(c) for c in page.items], page.next_cursor)

    @post(status_code=201, sync_to_thread=True, summary="Create a contact")
    def create_contact(self, caller: NamedDependency[ApiCaller], data: JSONBody[ContactWrite]) -> ContactPublic:
        with caller.session(Scope.WRITE) as session:
            return ContactPublic.of(contacts.create_contact(session, data.changes()))

    @get("/{contact_id:uuid}", sync_to_thread=True, summary="Get a contact")
    def get_contact(self, caller: NamedDependency[ApiCaller], contact_id: FromPath[UUID]) -> ContactPublic:
        with caller.session(Scope.READ) as session:
            return ContactPublic.of(contacts.get_contact(session, contact_id))

    @patch("/{contact_id:uuid}", sync_to_thread=True, summary="Change a contact (blank values are ignored)")
    def update_contact(
        self, caller: NamedDependency[ApiCaller], contact_id: FromPath[UUID], data: JSONBody[ContactWrite]
    ) -> ContactPublic:
        with caller.session(Scope.WRITE) as session:
            return ContactPublic.of(contacts.update_contact(session, contact_id, data.changes()))

    @post("/{contact_id:uuid}/merge", status_code=200, sync_to_thread=True, summary="Merge another contact in")
    def merge(
        self, caller: NamedDependency[ApiCaller], contact_id: FromPath[UUID], data: JSONBody[MergeRequest]
    ) -> ContactPublic:
        """The only way two contacts become one: everything of the other moves here; it is logged."""
        with caller.session(Scope.WRITE) as session:
            return ContactPublic.of(identity.merge_contacts(session, contact_id, data.other_contact_id))

    @get("/{contact_id:uuid}/timeline", sync_to_thread=True, summary="Everything known of a contact, in order")
    def timeline(
        self,
        caller: NamedDependency[ApiCaller],
        contact_id: FromPath[UUID],
        limit: Annotated[int, Parameter(ge=1, le=2000)] = 500,
    ) -> list[dict[str, Any]]:
        with caller.session(Scope.READ) as session:
            return identity.timeline(session, contact_id, limit=limit)


@get("/api/v1/resolve", tags=["contacts"], sync_to_thread=True, security=[{"apiKey": []}])
def resolve_visitor(caller: NamedDependency[ApiCaller], visitor_token: FromQuery[str | None] = None) -> dict[str, Any]:
    """The identification level of a browser's visitor token: anonymous or identified (with the
    contact and the evidence)."""
    with caller.session(Scope.READ) as session:
        resolution = identity.resolve(session, visitor_token=visitor_token)
        return {
            "level": resolution.level.value,
            "visitor_id": resolution.visitor_id,
            "contact_id": resolution.contact_id,
            "evidence": resolution.evidence,
        }
