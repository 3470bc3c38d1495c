"""Manage: Forms: list, create and edit forms (their fields and where they go), with the embed code and the
hosted link."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from api.dashboard.auth import StaffCaller, requires
from api.dashboard.manage_input import NO_REFUSAL, Refusal, changed_fields, parsed, row_count, shown_again
from api.dashboard.rendering import redirect, screen
from api.fields import given
from api.forms.controller import FormCreate, FormUpdate
from api.pages.rendering import embed_code
from api.web.csrf import checked_form
from tenants.contacts.service import CORE_FIELDS, list_fields
from tenants.forms import service as forms
from tenants.models import Form, Site, UserRole
from tenants.settings import get_settings
from tenants.tracking import sites

__all__ = ["FormsController"]

FORM_SETTINGS = ("name", "fields", "success_redirect", "success_message", "min_fill_seconds")
BLANK_FIELD_ROWS = 2
"""Empty rows under a form's fields, to add inputs without a script."""
MOST_FIELD_ROWS = 50 + BLANK_FIELD_ROWS
"""The most fields a form takes (``FormFields``) and the empty rows under them."""


def _field_rows(form: dict[str, str]) -> list[dict[str, Any]]:
    """The fields table: ``fields-<n>-name`` … per row; a row without a key is left out."""
    rows = []
    for index in range(row_count(form.get("field_rows", ""), MOST_FIELD_ROWS)):
        name = form.get(f"fields-{index}-name", "").strip()
        if not name:
            continue
        row: dict[str, Any] = {
            "name": name,
            "type": form.get(f"fields-{index}-type", "text"),
            "required": form.get(f"fields-{index}-required") == "on",
        }
        for optional in ("label", "maps_to"):
            if value := form.get(f"fields-{index}-{optional}", "").strip():
                row[optional] = value
        rows.append(row)
    return rows


def _form_values(form: dict[str, str], *, with_site: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": form.get("name", ""),
        "fields": _field_rows(form),
        "success_redirect": form.get("success_redirect", "").strip(),
        "success_message": form.get("success_message", ""),
        "min_fill_seconds": form.get("min_fill_seconds", "2") or "2",
    }
    if with_site:
        values["site_id"] = form.get("site_id", "")
        values["success_redirect"] = values["success_redirect"] or None
    return values


NEW_FORM: dict[str, Any] = {
    "name": "",
    "success_redirect": "",
    "success_message": "Thank you!",
    "min_fill_seconds": 2,
    "fields": [{"name": "email", "label": "Email", "type": "email", "required": True, "maps_to": "email"}],
}
"""A new form before anything is typed: one required email field."""


def _settings_of(form: Form) -> dict[str, Any]:
    return {name: getattr(form, name) for name in FORM_SETTINGS}


def _editor_context(session: Any, staff: StaffCaller) -> dict[str, Any]:
    targets = list(CORE_FIELDS) + [f"custom:{field.key}" for field in list_fields(session)]
    return {
        "field_types": forms.FIELD_TYPES,
        "targets": targets,
        "blank_rows": BLANK_FIELD_ROWS,
        "can_edit": staff.can(UserRole.EDITOR),
    }


class FormsController(Controller):
    path = "/app/forms"
    include_in_schema = False
    guards = [requires(UserRole.VIEWER)]

    @get("/")
    async def list_forms(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        def read() -> tuple[list[Form], dict[Any, str]]:
            with staff.session() as session:
                return forms.list_forms(session), {s.id: s.name for s in sites.list_sites(session)}

        listed, site_names = await anyio.to_thread.run_sync(read)
        return screen(
            request,
            staff,
            "dashboard/forms/list.html",
            section="forms",
            title="Forms",
            forms=listed,
            site_names=site_names,
            base_url=get_settings().base_url,
            can_edit=staff.can(UserRole.EDITOR),
        )

    async def _editor(
        self,
        request: Request[Any, Any, Any],
        staff: StaffCaller,
        form_id: UUID | None,
        values: dict[str, Any] | None = None,
        refusal: Refusal = NO_REFUSAL,
    ) -> Template:
        """The form's editor (a new form's when ``form_id`` is None): first shown with the saved values, or again
        after a refusal with what was typed and why."""

        def read() -> tuple[Form | None, list[Site], dict[str, Any]]:
            with staff.session() as session:
                form = forms.get_form(session, form_id) if form_id else None
                return form, [] if form else sites.list_sites(session), _editor_context(session, staff)

        form, site_list, context = await anyio.to_thread.run_sync(read)
        base_url = get_settings().base_url
        saved = {**_settings_of(form), "success_redirect": form.success_redirect or ""} if form else NEW_FORM
        return screen(
            request,
            staff,
            "dashboard/forms/edit.html",
            section="forms",
            title=form.name if form else "New form",
            status=refusal.status,
            form=form,
            values=values or saved,
            sites=site_list,
            embed=embed_code(form, base_url) if form else "",
            hosted_url=f"{base_url}/f/{form.form_key}" if form else "",
            refusal=refusal,
            **context,
        )

    @get("/new", guards=[requires(UserRole.EDITOR)])
    async def new_form(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Template:
        return await self._editor(request, staff, None)

    @post("/", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def create_form(self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller]) -> Redirect:
        values = _form_values(await checked_form(request), with_site=True)

        def create() -> UUID:
            data = parsed("form", values, FormCreate)
            with staff.session() as session:
                form = forms.create_form(
                    session,
                    site_id=data.site_id,
                    name=data.name,
                    fields=[msgspec.to_builtins(field) for field in data.fields],
                    success_redirect=data.success_redirect,
                    success_message=data.success_message,
                    min_fill_seconds=data.min_fill_seconds,
                )
                staff.audit(session, "form.create", f"form:{form.id}", fields=list(FORM_SETTINGS))
                return form.id

        async with shown_again(lambda refusal: self._editor(request, staff, None, values, refusal)):
            form_id = await anyio.to_thread.run_sync(create)
        return redirect(f"/app/forms/{form_id}", "Form created")

    @get("/{form_id:uuid}")
    async def show_form(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], form_id: FromPath[UUID]
    ) -> Template:
        return await self._editor(request, staff, form_id)

    @post("/{form_id:uuid}", guards=[requires(UserRole.EDITOR)], status_code=303)
    async def update_form(
        self, request: Request[Any, Any, Any], staff: NamedDependency[StaffCaller], form_id: FromPath[UUID]
    ) -> Redirect:
        values = _form_values(await checked_form(request), with_site=False)

        def update() -> None:
            data = parsed("form", values, FormUpdate)
            with staff.session() as session:
                before = _settings_of(forms.get_form(session, form_id))
                before["fields"] = list(before["fields"])
                form = forms.update_form(
                    session,
                    form_id,
                    name=given(data.name),
                    fields=None if data.fields is msgspec.UNSET else [msgspec.to_builtins(f) for f in data.fields],
                    success_redirect=given(data.success_redirect),
                    success_message=given(data.success_message),
                    min_fill_seconds=given(data.min_fill_seconds),
                )
                changed = changed_fields(before, _settings_of(form))
                if changed:
                    staff.audit(session, "form.update", f"form:{form.id}", fields=changed)

        async with shown_again(lambda refusal: self._editor(request, staff, form_id, values, refusal)):
            await anyio.to_thread.run_sync(update)
        return redirect(f"/app/forms/{form_id}", "Form saved")
