"""Tenant API: contacts, custom fields, explicit merges, timelines, and resolving a visitor token."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from api.contacts.filters import contact_filter
from api.contacts.schemas import (
    ContactCreate,
    ContactFieldCreate,
    ContactFieldPublic,
    ContactPage,
    ContactPublic,
    ContactUpdate,
    MergeRequest,
    Resolution,
    TimelinePage,
)
from api.openapi import AUTH, BODY, creates, problems
from tenants.accounts.service import ApiCaller
from tenants.contacts import service as contacts
from tenants.identity import service as identity
from tenants.models import Evidence, Scope

__all__ = ["ContactFieldsController", "ContactsController", "resolve_visitor"]


class ContactFieldsController(Controller):
    path = "/api/v1/contact-fields"
    tags = ["contacts"]
    security = [{"apiKey": []}]

    @get(sync_to_thread=True, summary="List custom contact fields", responses=problems(*AUTH))
    def list_contact_fields(self, caller: NamedDependency[ApiCaller]) -> list[ContactFieldPublic]:
        """The tenant's custom contact fields, by key."""
        with caller.session(Scope.READ) as session:
            return [ContactFieldPublic.of(f) for f in contacts.list_fields(session)]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Define a custom contact field",
        responses=problems(*AUTH, *BODY, 409),
        operation_class=creates("key", "removeContactField", source="$response.body#/key"),
    )
    def create_contact_field(
        self, caller: NamedDependency[ApiCaller], data: JSONBody[ContactFieldCreate]
    ) -> ContactFieldPublic:
        """``sensitive`` fields render on pages only for logged-in members (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            field = contacts.create_field(
                session, key=data.key, label=data.label, type=data.type, sensitive=data.sensitive
            )
            return ContactFieldPublic.of(field)

    @delete(
        "/{key:str}",
        status_code=204,
        sync_to_thread=True,
        summary="Remove a custom field definition",
        responses=problems(*AUTH, 404),
    )
    def remove_contact_field(self, caller: NamedDependency[ApiCaller], key: FromPath[str]) -> None:
        """Contacts keep their stored values; the key is no longer accepted (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            contacts.delete_field(session, key)


class ContactsController(Controller):
    path = "/api/v1/contacts"
    tags = ["contacts"]
    security = [{"apiKey": []}]

    @get(sync_to_thread=True, summary="List, search and filter contacts", responses=problems(*AUTH, 400, 422))
    def list_contacts(
        self,
        caller: NamedDependency[ApiCaller],
        request: Request[Any, Any, Any],
        q: Annotated[str | None, Parameter(description="Start of an email, first or last name")] = None,
        touch: Annotated[
            Literal["first", "last"], Parameter(description="Which touch the dimension filters apply to")
        ] = "first",
        channel: Annotated[str | None, Parameter(description="The touch's channel (as the attribution report)")] = None,
        source: Annotated[str | None, Parameter(description="The touch's source, e.g. google or (direct)")] = None,
        medium: Annotated[str | None, Parameter(description="The touch's medium, e.g. cpc or (none)")] = None,
        campaign: Annotated[str | None, Parameter(description="The touch's campaign, or (none)")] = None,
        partner: Annotated[str | None, Parameter(description="The touch's partner code, or (none)")] = None,
        evidence: Annotated[
            Evidence | None, Parameter(description="Only contacts with a device identified by this evidence")
        ] = None,
        created_from: Annotated[date | None, Parameter(description="Created on or after this UTC day")] = None,
        created_to: Annotated[date | None, Parameter(description="Created on or before this UTC day")] = None,
        cursor: Annotated[str | None, Parameter(description="`next_cursor` of a page: the older contacts")] = None,
        before: Annotated[str | None, Parameter(description="`previous_cursor` of a page: the newer contacts")] = None,
        limit: Annotated[int, Parameter(ge=1, le=contacts.MAX_PAGE, description="Page size")] = 50,
    ) -> ContactPage:
        """Newest first, one keyset page at a time. Besides the parameters below, ``field.<key>=<value>`` keeps
        contacts whose custom field ``key`` equals ``value`` (422 for an unknown field or a value not of its
        type). 422 for a cursor this API did not return, or both ``cursor`` and ``before``."""
        filters = contact_filter(dict(request.query_params.items()))
        with caller.session(Scope.READ) as session:
            page = contacts.list_contacts(session, filters, cursor=cursor, before=before, limit=limit)
            return ContactPage([ContactPublic.of(c) for c in page.items], page.next_cursor, page.previous_cursor)

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Create a contact",
        responses=problems(*AUTH, *BODY, 409),
        operation_class=creates("contact_id", "getContact", "updateContact", "timeline"),
        response_description="The contact; its id feeds the other contact operations",
    )
    def create_contact(self, caller: NamedDependency[ApiCaller], data: JSONBody[ContactCreate]) -> ContactPublic:
        """409 when a contact has this email; custom values must be of defined fields (422)."""
        with caller.session(Scope.WRITE) as session:
            return ContactPublic.of(contacts.create_contact(session, data.changes()))

    @get("/{contact_id:uuid}", sync_to_thread=True, summary="Get a contact", responses=problems(*AUTH, 400, 404))
    def get_contact(self, caller: NamedDependency[ApiCaller], contact_id: FromPath[UUID]) -> ContactPublic:
        with caller.session(Scope.READ) as session:
            return ContactPublic.of(contacts.get_contact(session, contact_id))

    @patch(
        "/{contact_id:uuid}",
        sync_to_thread=True,
        summary="Change a contact (blank values are ignored)",
        responses=problems(*AUTH, *BODY, 404, 409),
    )
    def update_contact(
        self, caller: NamedDependency[ApiCaller], contact_id: FromPath[UUID], data: JSONBody[ContactUpdate]
    ) -> ContactPublic:
        """Only what is given changes; 409 when another contact has the new email."""
        with caller.session(Scope.WRITE) as session:
            return ContactPublic.of(contacts.update_contact(session, contact_id, data.changes()))

    @post(
        "/{contact_id:uuid}/merge",
        status_code=200,
        sync_to_thread=True,
        summary="Merge another contact in",
        responses=problems(*AUTH, *BODY, 404, 409),
    )
    def merge(
        self, caller: NamedDependency[ApiCaller], contact_id: FromPath[UUID], data: JSONBody[MergeRequest]
    ) -> ContactPublic:
        """The only way two contacts become one: everything of the other moves here; it is logged."""
        with caller.session(Scope.WRITE) as session:
            return ContactPublic.of(identity.merge_contacts(session, contact_id, data.other_contact_id))

    @get(
        "/{contact_id:uuid}/timeline",
        sync_to_thread=True,
        summary="Everything known of a contact, in order",
        responses=problems(*AUTH, 400, 404),
    )
    def timeline(
        self,
        caller: NamedDependency[ApiCaller],
        contact_id: FromPath[UUID],
        before: Annotated[
            str | None, Parameter(description="`next_cursor` of the previous page: the entries before it")
        ] = None,
        limit: Annotated[
            int, Parameter(ge=1, le=identity.MAX_TIMELINE_PAGE, description="At most this many entries")
        ] = identity.TIMELINE_PAGE,
    ) -> TimelinePage:
        """Visits from every device, form submissions, link clicks and identity events, newest first, one page
        at a time: pass a page's ``next_cursor`` as ``before`` for the older entries (422 for a cursor this API
        did not return)."""
        with caller.session(Scope.READ) as session:
            page = identity.timeline(session, contact_id, before=before, limit=limit)
            return TimelinePage(page.entries, page.next_cursor)


@get(
    "/api/v1/resolve",
    tags=["contacts"],
    sync_to_thread=True,
    security=[{"apiKey": []}],
    summary="Resolve a visitor token",
    responses=problems(*AUTH, 400),
)
def resolve_visitor(
    caller: NamedDependency[ApiCaller],
    visitor_token: Annotated[str | None, Parameter(description="The token of a browser's `tm_vid` cookie")] = None,
) -> Resolution:
    """The identification level of a browser's visitor token: anonymous or identified (with the
    contact and the evidence). A token that fails verification is anonymous."""
    with caller.session(Scope.READ) as session:
        resolution = identity.resolve(session, visitor_token=visitor_token)
        return Resolution(
            level=resolution.level,
            visitor_id=resolution.visitor_id,
            contact_id=resolution.contact_id,
            evidence=Evidence(resolution.evidence) if resolution.evidence else None,
        )
