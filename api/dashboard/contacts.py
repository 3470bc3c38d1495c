"""The Contacts screens: the filtered list and its CSV export, a contact's page (fields, devices, touches,
timeline), revealing a masked field, editing, and the explicit merge with its confirmation step."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Stream, Template
from sqlalchemy import literal_column
from sqlalchemy.sql.elements import Label
from sqlmodel import Session, col, select

from api.contacts.filters import FIELD_PREFIX, contact_filter
from api.dashboard.auth import StaffCaller, requires
from api.dashboard.manage_input import NO_REFUSAL, Refusal, shown_again
from api.dashboard.rendering import redirect, screen
from api.privacy.controller import person_export_stream
from api.web.csrf import checked_form
from tenants.contacts import service as contacts
from tenants.conversions.consent import consent_of
from tenants.errors import Invalid, NotFound
from tenants.identity import service as identity
from tenants.models import Contact, Evidence, UserRole, Visitor
from tenants.privacy import erase as privacy
from tenants.privacy.person import find_person
from tenants.purchases import service as purchases
from tenants.reports.dimensions import touch_dimension_sql
from tenants.tracking.segments import FILTERED_DIMENSIONS, TOUCHES

__all__ = ["ContactsController"]

LIST_PARAMS = ("q", "touch", *FILTERED_DIMENSIONS, "evidence", "created_from", "created_to")
CSV_FLUSH_ROWS = 500
"""Rows encoded per chunk sent to the browser."""
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PURCHASES_SHOWN = 10
"""The contact page lists this many latest purchases (all of them through the API)."""


def _params(request: Request[Any, Any, Any]) -> dict[str, str]:
    return dict(request.query_params.items())


def _filter_query(params: dict[str, str]) -> dict[str, str]:
    """The filter part of a list address (no paging), to carry into export and paging links."""
    return {k: v for k, v in params.items() if (k in LIST_PARAMS or k.startswith(FIELD_PREFIX)) and v.strip()}


def _safe_cell(value: str) -> str:
    # A spreadsheet runs a cell that starts like a formula; contact data comes from strangers' forms.
    return f"'{value}" if value.startswith(FORMULA_START) else value


def _touch_dimensions(session: Session, contact_id: FromPath[UUID]) -> dict[str, dict[str, str]]:
    """The first and last touch of a contact by dimension, from the reports' one definition."""
    columns: list[Label[Any]] = [
        literal_column(expression).label(f"{touch}__{name}")
        for touch in TOUCHES
        for name, expression in touch_dimension_sql(f"contacts.{touch}_touch").items()
    ]
    row = session.execute(select(*columns).select_from(Contact).where(Contact.id == contact_id)).one()
    result: dict[str, dict[str, str]] = {touch: {} for touch in TOUCHES}
    for key, value in row._mapping.items():
        touch, name = str(key).split("__", 1)
        result[touch][name] = value
    return result


class ContactsController(Controller):
    path = "/app/contacts"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/", sync_to_thread=True)
    def contact_list(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        params = _params(request)
        filters = contact_filter(params)
        with staff.session() as session:
            page = contacts.list_contacts(
                session, filters, cursor=params.get("cursor") or None, before=params.get("before") or None
            )
            total = contacts.count_contacts(session, filters)
            custom_fields = contacts.list_fields(session)
            bought = purchases.contact_purchase_totals(session, [c.id for c in page.items])
        query = _filter_query(params)
        return screen(
            request,
            staff,
            "dashboard/contacts/list.html",
            section="contacts",
            title="Contacts",
            page=page,
            total=total,
            bought=bought,
            params=params,
            custom_fields=custom_fields,
            evidences=[e.value for e in Evidence],
            dimensions=FILTERED_DIMENSIONS,
            query=urlencode(query),
            field_filters={k: v for k, v in query.items() if k.startswith(FIELD_PREFIX)},
        )

    @get("/export.csv", sync_to_thread=True)
    def export(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Stream:
        filters = contact_filter(_params(request))
        include_sensitive = staff.can(UserRole.EDITOR)
        # Audited before the first byte, in its own transaction: a download cut short was still taken.
        with staff.session() as session:
            header, _ = contacts.export_contacts(session, filters, include_sensitive=include_sensitive)
            staff.audit(
                session,
                "contacts.export",
                filters=_filter_query(_params(request)),
                sensitive=include_sensitive,
            )

        def chunks() -> Iterator[bytes]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(header)
            with staff.session() as session:
                _, rows = contacts.export_contacts(session, filters, include_sensitive=include_sensitive)
                for count, row in enumerate(rows, 1):
                    writer.writerow([_safe_cell(cell) for cell in row])
                    if count % CSV_FLUSH_ROWS == 0:
                        yield buffer.getvalue().encode()
                        buffer.seek(0)
                        buffer.truncate()
            yield buffer.getvalue().encode()

        return Stream(
            chunks(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="contacts.csv"', "Cache-Control": "no-store"},
        )

    def _contact_screen(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffCaller],
        contact_id: UUID,
        *,
        before: str | None = None,
        revealed: dict[str, str] | None = None,
    ) -> Template:
        with staff.session() as session:
            contact = contacts.get_contact(session, contact_id)
            kept = contacts.get_contact(session, contact.merged_into) if contact.merged_into is not None else None
            masked = contacts.staff_masked_fields(session)
            custom_fields = contacts.list_fields(session)
            devices = list(
                session.exec(select(Visitor).where(Visitor.contact_id == contact_id).order_by(col(Visitor.id)))
            )
            consents = {device.id: consent_of(session, device.id) for device in devices}
            touches = _touch_dimensions(session, contact_id)
            timeline = identity.timeline(session, contact_id, before=before)
            bought = purchases.contact_purchase_totals(session, [contact_id]).get(contact_id)
            latest = purchases.list_purchases(session, contact_id=contact_id, limit=PURCHASES_SHOWN)
        return screen(
            request,
            staff,
            "dashboard/contacts/contact.html",
            section="contacts",
            title=contact.email,
            contact=contact,
            kept=kept,
            masked=masked,
            revealed=revealed or {},
            custom_fields=custom_fields,
            devices=devices,
            consents=consents,
            touches=touches,
            timeline=timeline,
            bought=bought,
            latest_purchases=latest,
            can_edit=staff.can(UserRole.EDITOR),
            can_erase=staff.can(UserRole.ADMIN),
        )

    @get("/{contact_id:uuid}", sync_to_thread=True)
    def contact_page(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], contact_id: FromPath[UUID]
    ) -> Template:
        return self._contact_screen(request, staff, contact_id, before=request.query_params.get("before") or None)

    @get("/{contact_id:uuid}/export.json", guards=[requires(UserRole.EDITOR)], sync_to_thread=True)
    def export_person(self, staff: NamedDependency[StaffCaller], contact_id: FromPath[UUID]) -> Stream:
        """Everything held about the person, as the API's export gives it; audited before the first byte, as a
        revealed field is (the download holds every sensitive value)."""
        with staff.session() as session:
            find_person(session, contact_id)
            staff.audit(session, "contact.export", str(contact_id))
        return person_export_stream(staff.tenant_id, contact_id, f"contact-{contact_id}.json")

    @get("/{contact_id:uuid}/erase", guards=[requires(UserRole.ADMIN)], sync_to_thread=True)
    def erase_form(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], contact_id: FromPath[UUID]
    ) -> Template:
        with staff.session() as session:
            contact = contacts.get_contact(session, contact_id)
            person = find_person(session, contact_id)
        return screen(
            request,
            staff,
            "dashboard/contacts/erase.html",
            section="contacts",
            title=f"Erase {contact.email}",
            contact=contact,
            devices=len(person.visitor_ids),
        )

    @post("/{contact_id:uuid}/erase", guards=[requires(UserRole.ADMIN)])
    async def erase(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], contact_id: FromPath[UUID]
    ) -> Redirect:
        form = await checked_form(request)
        if form.get("confirm") != "yes":
            raise Invalid("tick the box to confirm the erase", {"confirm": "must be ticked"})

        def erase_them() -> UUID:
            with staff.session() as session:
                erasure = privacy.request_erasure(
                    session, contact_id, via="dashboard", requested_by=f"staff:{staff.user_id}"
                )
                staff.audit(session, "contact.erase", str(contact_id), erasure=str(erasure.id))
                return erasure.id

        erasure_id = await anyio.to_thread.run_sync(erase_them)
        return redirect(f"/app/privacy/erasures/{erasure_id}", "Erasure queued: the person is being erased")

    @post("/{contact_id:uuid}/reveal", guards=[requires(UserRole.EDITOR)], status_code=200)
    async def reveal(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], contact_id: FromPath[UUID]
    ) -> Template:
        name = (await checked_form(request)).get("field", "")

        def reveal_field() -> dict[str, str]:
            with staff.session() as session:
                contact = contacts.get_contact(session, contact_id)
                if name not in contacts.staff_masked_fields(session):
                    raise Invalid("that field is not masked", {"field": "must be a masked field"})
                value = contact.custom.get(name.removeprefix("custom.")) if name.startswith("custom.") else None
                if not name.startswith("custom."):
                    value = getattr(contact, name)
                staff.audit(session, "contact.reveal", str(contact_id), field=name)  # never the value
                return {name: "" if value is None else str(value)}

        revealed = await anyio.to_thread.run_sync(reveal_field)
        return await anyio.to_thread.run_sync(
            lambda: self._contact_screen(request, staff, contact_id, revealed=revealed)
        )

    async def _editor(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        contact_id: UUID,
        typed: dict[str, str] | None = None,
        refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        """The contact's edit form: first with the stored values (sensitive ones blank), or again after a refusal
        with what was typed and the reason by each field."""

        def read() -> tuple[Contact, list[Any]]:
            with staff.session() as session:
                return contacts.get_contact(session, contact_id), contacts.list_fields(session)

        contact, custom_fields = await anyio.to_thread.run_sync(read)
        stored = {
            "email": contact.email,
            "first_name": contact.first_name or "",
            "last_name": contact.last_name or "",
            "phone": "",
            **{
                f"custom.{field.key}": "" if field.sensitive or value is None else str(value)
                for field in custom_fields
                for value in [contact.custom.get(field.key)]
            },
        }
        return screen(
            request,
            staff,
            "dashboard/contacts/edit.html",
            section="contacts",
            title=f"Edit {contact.email}",
            status=refusal.status,
            contact=contact,
            custom_fields=custom_fields,
            values=typed or stored,
            refusal=refusal,
        )

    @get("/{contact_id:uuid}/edit", guards=[requires(UserRole.EDITOR)])
    async def edit_form(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], contact_id: FromPath[UUID]
    ) -> Template:
        return await self._editor(request, staff, contact_id)

    @post("/{contact_id:uuid}/edit", guards=[requires(UserRole.EDITOR)])
    async def edit(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], contact_id: FromPath[UUID]
    ) -> Redirect:
        form = await checked_form(request)

        def save() -> None:
            with staff.session() as session:
                defined = [f.key for f in contacts.list_fields(session)]
                changes = contacts.ContactChanges(
                    email=form.get("email"),
                    first_name=form.get("first_name"),
                    last_name=form.get("last_name"),
                    phone=form.get("phone"),
                    custom={key: form[f"custom.{key}"] for key in defined if form.get(f"custom.{key}", "").strip()},
                )
                contacts.update_contact(session, contact_id, changes)
                given = [name for name in ("email", "first_name", "last_name", "phone") if form.get(name, "").strip()]
                given += [f"custom.{key}" for key in (changes.custom or {})]
                staff.audit(session, "contact.update", str(contact_id), fields=given)

        async with shown_again(
            lambda refusal: self._editor(request, staff, contact_id, form, refusal), conflict_field="email"
        ):
            await anyio.to_thread.run_sync(save)
        return redirect(f"/app/contacts/{contact_id}", "Contact saved")

    @get("/{contact_id:uuid}/merge", guards=[requires(UserRole.EDITOR)], sync_to_thread=True)
    def merge_form(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], contact_id: FromPath[UUID]
    ) -> Template:
        email = (request.query_params.get("email") or "").strip()
        with staff.session() as session:
            contact = contacts.get_contact(session, contact_id)
            other = contacts.find_by_email(session, email) if email else None
            problem = ""
            if email and other is None:
                problem = f"No contact has the email {email}."
            elif other is not None and other.id == contact.id:
                problem, other = "That is this contact; pick another one.", None
        return screen(
            request,
            staff,
            "dashboard/contacts/merge.html",
            section="contacts",
            title=f"Merge into {contact.email}",
            contact=contact,
            other=other,
            email=email,
            problem=problem,
            status=404 if problem.startswith("No contact") else 200,
        )

    @post("/{contact_id:uuid}/merge", guards=[requires(UserRole.EDITOR)])
    async def merge(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], contact_id: FromPath[UUID]
    ) -> Redirect:
        form = await checked_form(request)
        try:
            other_id = UUID(form.get("other_contact_id", ""))
        except ValueError:
            raise NotFound("contact not found") from None

        def merge_them() -> None:
            with staff.session() as session:
                other = contacts.get_contact(session, other_id)
                identity.merge_contacts(session, contact_id, other_id)
                staff.audit(session, "contact.merge", str(contact_id), merged=str(other_id), merged_email=other.email)

        await anyio.to_thread.run_sync(merge_them)
        return redirect(f"/app/contacts/{contact_id}", "Contacts merged")
