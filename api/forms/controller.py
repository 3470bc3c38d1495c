"""Forms: the tenant API, the hosted page, and the public submit endpoint."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import Redirect, Template

from api.cookies import visitor_cookie
from api.fields import END, HTTP_URL, NOT_BLANK, SPACE, given
from api.openapi import AUTH, BODY, creates, problems
from api.pages.rendering import embed_code
from api.problems import problem
from api.web import FormRefused, page
from tenants.accounts.service import ApiCaller
from tenants.contacts.service import CORE_FIELDS
from tenants.conversions.consent import privacy_signal_of
from tenants.errors import Invalid
from tenants.forms import service as forms
from tenants.models import Form, Scope
from tenants.settings import get_settings
from tenants.tracking.origins import client_ip, normalize_origin
from tenants.tracking.visitors import VISITOR_COOKIE

__all__ = ["FormsController", "hosted_form", "submit_form"]

MAX_FORM_BODY = 64 * 1024


FieldName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=50,
        pattern=rf"^(?!tm_)[^{SPACE}](?:[^\n]*[^{SPACE}])?{END}",
        description="The input's name, unique in the form; not starting with tm_ (the tracker's own fields)",
    ),
]
MapsTo = Annotated[
    str,
    msgspec.Meta(
        pattern=rf"^(?:{'|'.join(CORE_FIELDS)}|custom:[a-z][a-z0-9_]{{0,49}}){END}",
        description="The contact field it fills: email, first_name, last_name, phone or custom:<defined key>; "
        "the field's name when omitted",
    ),
]
RedirectUrl = Annotated[
    str,
    msgspec.Meta(
        max_length=4096, pattern=rf"{HTTP_URL}|^{END}", description="Where to send the browser: an http(s) URL"
    ),
]


class FormField(msgspec.Struct, forbid_unknown_fields=True):
    """One input of a form. Exactly one field of a form maps to email, and it is required."""

    name: FieldName
    maps_to: MapsTo | msgspec.UnsetType = msgspec.UNSET
    label: Annotated[str, msgspec.Meta(max_length=200, description="What people see; from the name if omitted")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    type: (
        Annotated[
            Literal["text", "email", "tel", "number", "textarea", "checkbox", "date"],
            msgspec.Meta(description="The input's type; email for the email field, text otherwise, when omitted"),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    required: Annotated[bool, msgspec.Meta(description="True for the email field when omitted")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    max_length: Annotated[int, msgspec.Meta(ge=1, le=5000, description="Longest value accepted; 500 if omitted")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET


FormFields = Annotated[list[FormField], msgspec.Meta(min_length=1, max_length=50, description="The inputs, in order")]
FormName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK, description="The form's name, for the tenant")
]
SuccessMessage = Annotated[str, msgspec.Meta(max_length=2000, description="Shown after a submission")]


MinFillSeconds = Annotated[
    int,
    msgspec.Meta(ge=0, le=600, description="Seconds a person takes at least; faster submissions are dropped as bots"),
]


class FormCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new form of one site: submissions are accepted from that site's origins and the hosted page."""

    site_id: Annotated[UUID, msgspec.Meta(description="The site whose origins may submit it")]
    name: FormName
    fields: FormFields
    success_redirect: RedirectUrl | None = None
    success_message: SuccessMessage | None = None
    min_fill_seconds: MinFillSeconds = 2


class FormUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; omitted fields stay. ``fields`` replaces all inputs."""

    name: FormName | msgspec.UnsetType = msgspec.UNSET
    fields: FormFields | msgspec.UnsetType = msgspec.UNSET
    success_redirect: RedirectUrl | msgspec.UnsetType = msgspec.UNSET
    """Empty removes the redirect."""
    success_message: SuccessMessage | msgspec.UnsetType = msgspec.UNSET
    min_fill_seconds: MinFillSeconds | msgspec.UnsetType = msgspec.UNSET


class FormPublic(msgspec.Struct):
    id: UUID
    site_id: UUID
    name: str
    form_key: str
    fields: list[FormField]
    success_redirect: str | None
    success_message: str | None
    min_fill_seconds: int
    hosted_url: str
    embed_html: str

    @classmethod
    def of(cls, form: Form) -> FormPublic:
        base = get_settings().base_url
        return cls(
            id=form.id,
            site_id=form.site_id,
            name=form.name,
            form_key=form.form_key,
            fields=msgspec.convert(form.fields, list[FormField]),
            success_redirect=form.success_redirect,
            success_message=form.success_message,
            min_fill_seconds=form.min_fill_seconds,
            hosted_url=f"{base}/f/{form.form_key}",
            embed_html=embed_code(form, base),
        )


def _fields(fields: list[FormField]) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(field) for field in fields]


class FormsController(Controller):
    path = "/api/v1/forms"
    tags = ["forms"]
    security = [{"apiKey": []}]

    @post(
        status_code=201,
        sync_to_thread=True,
        summary="Define a form",
        responses=problems(*AUTH, *BODY),
        operation_class=creates("form_id", "getForm", "updateForm", "removeForm"),
        response_description="The form with its embed snippet and hosted URL",
    )
    def create_form(self, caller: NamedDependency[ApiCaller], data: JSONBody[FormCreate]) -> FormPublic:
        """Fields map to email (required, exactly one), first_name, last_name, phone or custom:<key>;
        422 for an unknown site or custom field."""
        with caller.session(Scope.WRITE) as session:
            form = forms.create_form(
                session,
                site_id=data.site_id,
                name=data.name,
                fields=_fields(data.fields),
                success_redirect=data.success_redirect,
                success_message=data.success_message,
                min_fill_seconds=data.min_fill_seconds,
            )
            return FormPublic.of(form)

    @get(sync_to_thread=True, summary="List forms", responses=problems(*AUTH))
    def list_forms(self, caller: NamedDependency[ApiCaller]) -> list[FormPublic]:
        """Every form of the tenant."""
        with caller.session(Scope.READ) as session:
            return [FormPublic.of(f) for f in forms.list_forms(session)]

    @get(
        "/{form_id:uuid}",
        sync_to_thread=True,
        summary="Get a form with its embed snippet",
        responses=problems(*AUTH, 400, 404),
    )
    def get_form(self, caller: NamedDependency[ApiCaller], form_id: FromPath[UUID]) -> FormPublic:
        with caller.session(Scope.READ) as session:
            return FormPublic.of(forms.get_form(session, form_id))

    @patch("/{form_id:uuid}", sync_to_thread=True, summary="Change a form", responses=problems(*AUTH, *BODY, 404))
    def update_form(
        self, caller: NamedDependency[ApiCaller], form_id: FromPath[UUID], data: JSONBody[FormUpdate]
    ) -> FormPublic:
        """Only what is given changes; the same rules as creating apply."""
        with caller.session(Scope.WRITE) as session:
            form = forms.update_form(
                session,
                form_id,
                name=given(data.name),
                fields=None if data.fields is msgspec.UNSET else _fields(data.fields),
                success_redirect=given(data.success_redirect),
                success_message=given(data.success_message),
                min_fill_seconds=given(data.min_fill_seconds),
            )
            return FormPublic.of(form)

    @delete(
        "/{form_id:uuid}",
        status_code=204,
        sync_to_thread=True,
        summary="Delete a form",
        responses=problems(*AUTH, 400, 404),
    )
    def remove_form(self, caller: NamedDependency[ApiCaller], form_id: FromPath[UUID]) -> None:
        """Its submissions stay on their contacts (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            forms.delete_form(session, form_id)


def _hosted_context(
    form: Form, values: dict[str, str] | None = None, errors: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "form": form,
        "base_url": get_settings().base_url,
        "values": values or {},
        "errors": errors or {},
        "shown_at_ms": int(time.time() * 1000),
    }


@get("/f/{form_key:str}", include_in_schema=False)
async def hosted_form(request: Request[Any, Any, Any], form_key: FromPath[str]) -> Template:
    """The form on its own page."""
    found = await anyio.to_thread.run_sync(forms.find_public_form, form_key)
    if found is None:
        raise FormRefused("This form does not exist.", 404, template="not_found.html", context={"title": "Not found"})
    return page(request, "forms/hosted.html", **_hosted_context(found[1]))


def _wants_json(request: Request[Any, Any, Any]) -> bool:
    return "application/json" in (request.headers.get("accept") or "") or (
        request.headers.get("content-type") or ""
    ).startswith("application/json")


@post("/f/{form_key:str}", include_in_schema=False, request_max_body_size=MAX_FORM_BODY, status_code=200)
async def submit_form(request: Request[Any, Any, Any], form_key: FromPath[str]) -> Response[Any]:
    """A submission from an embedded or hosted form (urlencoded, multipart or JSON)."""
    settings = get_settings()
    if (request.headers.get("content-type") or "").startswith("application/json"):
        try:
            raw = msgspec.json.decode(await request.body())
        except msgspec.DecodeError:
            return problem(400, "the body is not valid JSON")
        if not isinstance(raw, dict):
            return problem(400, "the body must be a JSON object of field values")
        values = {str(k): "" if v is None else str(v) for k, v in raw.items()}
    else:
        form_data = await request.form()
        values = {k: str(v) for k, v in form_data.items() if isinstance(v, str)}
    origin = request.headers.get("origin") or request.headers.get("referer")
    context = forms.SubmissionContext(
        origin=origin,
        ip=client_ip(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"),
            settings.trusted_proxies,
        ),
        visitor_tokens=(request.cookies.get(VISITOR_COOKIE), values.get("tm_token")),
        page_url=values.get("tm_page") or request.headers.get("referer"),
        own_origin=normalize_origin(settings.base_url),
        privacy_signal=privacy_signal_of(request.headers),
    )
    try:
        result = await anyio.to_thread.run_sync(forms.submit, form_key, values, context)
    except Invalid as error:
        if _wants_json(request):
            raise
        found = await anyio.to_thread.run_sync(forms.find_public_form, form_key)
        assert found is not None
        shown_again = _hosted_context(found[1], values, error.errors)
        raise FormRefused(error.message, 422, template="forms/hosted.html", context=shown_again) from error
    form = result.form
    if _wants_json(request):
        response: Response[Any] = Response(
            {"status": "ok", "message": form.success_message, "redirect": form.success_redirect}, status_code=200
        )
    elif form.success_redirect:
        response = Redirect(form.success_redirect, status_code=303)
    else:
        response = page(request, "forms/thanks.html", message=form.success_message or "Thank you!")
    # The hosted page is on our own site: keep its browser's visitor in a server-set cookie.
    if result.visitor_token and context.own_origin and normalize_origin(origin or "") == context.own_origin:
        response.set_cookie(visitor_cookie(result.visitor_token))
    return response
