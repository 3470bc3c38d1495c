"""Forms: defined by the tenant, embedded anywhere or hosted; a submission creates or updates the
contact by email, identifies the submitting browser and merges its anonymous history."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from sqlmodel import Session, col, select

from tenants.accounts.service import validate_email
from tenants.contacts.service import CORE_FIELDS, ContactChanges, list_fields, upsert_by_email
from tenants.conversions.consent import record_privacy_signal
from tenants.conversions.service import enqueue_conversion
from tenants.errors import Forbidden, Invalid, NotFound
from tenants.identity.service import link_visitor
from tenants.isolation import current_tenant_id, get_owned, tenant_session
from tenants.isolation.public_keys import tenant_of_public_key
from tenants.models import ConversionKind, Evidence, Form, FormSubmission, PrivacySignal, Site
from tenants.ratelimit import check_rate
from tenants.tracking.origins import normalize_origin
from tenants.tracking.visitors import visitor_of_browser

__all__ = [
    "FIELD_TYPES",
    "SubmissionContext",
    "SubmissionResult",
    "create_form",
    "delete_form",
    "get_form",
    "list_forms",
    "submit",
    "update_form",
]

FIELD_TYPES = ("text", "email", "tel", "number", "textarea", "checkbox", "date")
HONEYPOT = "tm_hp"
RESERVED_PREFIX = "tm_"
SUBMISSIONS_PER_MINUTE = 10
"""Per IP and tenant; a person submits a form a few times a minute at most."""


def _validated_fields(session: Session, fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    errors: dict[str, str] = {}
    custom_keys = {f.key for f in list_fields(session)}
    clean: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, raw in enumerate(fields):
        where = f"fields[{index}]"
        name = str(raw.get("name", "")).strip()
        maps_to = str(raw.get("maps_to", name)).strip()
        kind = str(raw.get("type", "email" if maps_to == "email" else "text"))
        if not name or name.startswith(RESERVED_PREFIX) or len(name) > 50 or name in names:
            errors[f"{where}.name"] = "must be a unique name of 1-50 characters not starting with tm_"
        if maps_to not in CORE_FIELDS and not (maps_to.startswith("custom:") and maps_to[7:] in custom_keys):
            errors[f"{where}.maps_to"] = "must be email, first_name, last_name, phone or custom:<defined field>"
        if kind not in FIELD_TYPES:
            errors[f"{where}.type"] = f"must be one of {list(FIELD_TYPES)}"
        names.add(name)
        clean.append(
            {
                "name": name,
                "label": str(raw.get("label") or name.replace("_", " ").capitalize())[:200],
                "maps_to": maps_to,
                "type": kind,
                "required": bool(raw.get("required", maps_to == "email")),
                "max_length": min(int(raw.get("max_length") or 500), 5000),
            }
        )
    email_fields = [f for f in clean if f["maps_to"] == "email"]
    if len(email_fields) != 1:
        errors["fields"] = "exactly one field must map to email (a contact is found by email)"
    elif not email_fields[0]["required"]:
        errors["fields"] = "the email field must be required"
    if errors:
        raise Invalid("the form is invalid", errors)
    return clean


def _validated_redirect(url: str | None) -> str | None:
    if url is None or not url.strip():
        return None
    if urlsplit(url).scheme not in ("http", "https"):
        raise Invalid("the form is invalid", {"success_redirect": "must be an http(s) URL"})
    return url.strip()


def create_form(
    session: Session,
    *,
    site_id: UUID,
    name: str,
    fields: list[dict[str, Any]],
    success_redirect: str | None = None,
    success_message: str | None = None,
    min_fill_seconds: int = 2,
) -> Form:
    """A form of one site: submissions are accepted from that site's origins (and the hosted page)."""
    if session.get(Site, (current_tenant_id(session), site_id)) is None:
        raise Invalid("the form is invalid", {"site_id": "no such site"})
    if not 1 <= len(name.strip()) <= 200:
        raise Invalid("the form is invalid", {"name": "must be 1 to 200 characters"})
    _validated_fill_seconds(min_fill_seconds)
    form = Form(
        site_id=site_id,
        name=name.strip(),
        form_key=secrets.token_urlsafe(12),
        fields=_validated_fields(session, fields),
        success_redirect=_validated_redirect(success_redirect),
        success_message=(success_message or "Thank you!")[:2000],
        min_fill_seconds=min_fill_seconds,
    )
    session.add(form)
    session.flush()
    return form


def get_form(session: Session, form_id: UUID) -> Form:
    return get_owned(session, Form, form_id, "form")


def list_forms(session: Session) -> list[Form]:
    return list(session.exec(select(Form).order_by(col(Form.id))))


def update_form(
    session: Session,
    form_id: UUID,
    *,
    name: str | None = None,
    fields: list[dict[str, Any]] | None = None,
    success_redirect: str | None = None,
    success_message: str | None = None,
    min_fill_seconds: int | None = None,
) -> Form:
    """Change what is given (None leaves a value as it is); the same rules as creating apply."""
    form = get_form(session, form_id)
    if name is not None:
        form.name = name.strip()[:200]
    if fields is not None:
        form.fields = _validated_fields(session, fields)
    if success_redirect is not None:
        form.success_redirect = _validated_redirect(success_redirect)
    if success_message is not None:
        form.success_message = success_message[:2000]
    if min_fill_seconds is not None:
        form.min_fill_seconds = _validated_fill_seconds(min_fill_seconds)
    session.add(form)
    session.flush()
    return form


def _validated_fill_seconds(seconds: int) -> int:
    if not 0 <= seconds <= 600:
        raise Invalid("the form is invalid", {"min_fill_seconds": "must be 0 to 600"})
    return seconds


def delete_form(session: Session, form_id: UUID) -> None:
    session.delete(get_form(session, form_id))


@dataclass(frozen=True)
class SubmissionContext:
    """What the request says about where a submission comes from."""

    origin: str | None
    ip: str | None
    visitor_tokens: tuple[str | None, ...] = ()
    """The server-set cookie first, then the tracker's hidden field."""
    page_url: str | None = None
    own_origin: str | None = None
    """The API's own origin: the hosted form page posts from there."""
    privacy_signal: PrivacySignal | None = None
    """GPC or DNT sent with the submission: the browser's conversions are not sent where the site honours it."""
    now_ms: int = field(default_factory=lambda: int(time.time() * 1000))


@dataclass(frozen=True)
class SubmissionResult:
    accepted: bool
    """False for spam: the answer looks the same, nothing is stored."""
    form: Form
    contact_id: UUID | None = None
    visitor_token: str | None = None
    new_visitor: bool = False


@dataclass(frozen=True)
class _FormRef:
    tenant_id: UUID
    form: Form
    allowed_origins: frozenset[str]
    site_id: UUID


def find_public_form(form_key: str) -> tuple[UUID, Form] | None:
    """The form behind a public key, with its tenant."""
    ref = _load(form_key)
    return (ref.tenant_id, ref.form) if ref else None


def _load(form_key: str) -> _FormRef | None:
    tenant_id = tenant_of_public_key("form", form_key)
    if tenant_id is None:
        return None
    with tenant_session(tenant_id) as session:
        form = session.exec(select(Form).where(Form.form_key == form_key)).first()
        if form is None:
            return None
        site = session.get(Site, (tenant_id, form.site_id))
        origins = frozenset(site.allowed_origins) if site else frozenset()
        return _FormRef(tenant_id, form, origins, form.site_id)


def submit(form_key: str, values: dict[str, str], context: SubmissionContext) -> SubmissionResult:
    """Accept a submission: spam checks, validation (422 per field), contact upsert by email (blank
    values never overwrite), the browser linked by the identity rules, and the history merge queued
    through the outbox in the same transaction."""
    ref = _load(form_key)
    if ref is None:
        raise NotFound("form not found")
    origin = normalize_origin(context.origin) if context.origin else None
    if origin is None or (origin not in ref.allowed_origins and origin != context.own_origin):
        raise Forbidden(f"submissions from {origin or 'an unknown origin'} are not accepted by this form")
    if context.ip:
        check_rate(ref.tenant_id, "form", context.ip, limit=SUBMISSIONS_PER_MINUTE, window_seconds=60)
    form = ref.form
    if values.get(HONEYPOT) or not _filled_slowly_enough(values.get("tm_started"), form, context.now_ms):
        return SubmissionResult(accepted=False, form=form)
    changes, data = _read_fields(form, values)
    with tenant_session(ref.tenant_id) as session:
        idempotency_key = (values.get("tm_submission") or "")[:64] or None
        if idempotency_key:
            earlier = session.exec(
                select(FormSubmission).where(
                    FormSubmission.form_id == form.id, FormSubmission.idempotency_key == idempotency_key
                )
            ).first()
            if earlier is not None:  # the same submission again (a double click, a retry)
                return SubmissionResult(accepted=True, form=form, contact_id=earlier.contact_id)
        try:
            contact, created = upsert_by_email(session, changes)
        except Invalid as error:  # name the form's fields, not the contact's
            names = {_contact_field(spec["maps_to"]): spec["name"] for spec in form.fields}
            raise Invalid(error.message, {names.get(k, k): v for k, v in error.errors.items()}) from None
        browser = visitor_of_browser(
            ref.tenant_id, *context.visitor_tokens, first_hit=(UUID(bytes=secrets.token_bytes(16)), context.now_ms)
        )
        submission = FormSubmission(
            form_id=form.id,
            contact_id=contact.id,
            visitor_id=browser.visitor_id,
            data=data,
            page_url=(context.page_url or "")[:4096] or None,
            idempotency_key=idempotency_key,
        )
        session.add(submission)
        if created:  # a lead: the form made a new contact
            enqueue_conversion(session, ConversionKind.LEAD, submission.id)
        if context.privacy_signal is not None:
            record_privacy_signal(session, browser.visitor_id, context.privacy_signal)
        link_visitor(
            session,
            visitor_id=browser.visitor_id,
            contact_id=contact.id,
            evidence=Evidence.FORM,
            site_id=ref.site_id,
            detail={"form_id": str(form.id)},
            new_contact=created,
        )
        return SubmissionResult(
            accepted=True,
            form=form,
            contact_id=contact.id,
            visitor_token=browser.token,
            new_visitor=browser.is_new,
        )


def _contact_field(maps_to: str) -> str:
    return f"custom.{maps_to[7:]}" if maps_to.startswith("custom:") else maps_to


def _filled_slowly_enough(started: str | None, form: Form, now_ms: int) -> bool:
    try:
        started_ms = int(started or "")
    except ValueError:
        return False
    return started_ms <= now_ms - form.min_fill_seconds * 1000 and started_ms > now_ms - 7 * 24 * 3600 * 1000


def _read_fields(form: Form, values: dict[str, str]) -> tuple[ContactChanges, dict[str, Any]]:
    errors: dict[str, str] = {}
    changes = ContactChanges(custom={})
    data: dict[str, Any] = {}
    for spec in form.fields:
        raw = (values.get(spec["name"]) or "").strip()
        if spec["required"] and not raw:
            errors[spec["name"]] = "is required"
            continue
        if len(raw) > spec["max_length"]:
            errors[spec["name"]] = f"must be at most {spec['max_length']} characters"
            continue
        if not raw:
            continue
        if spec["maps_to"] == "email" and validate_email(raw):
            errors[spec["name"]] = "must be an email address like name@example.com"
            continue
        data[spec["name"]] = raw
        target = spec["maps_to"]
        if target.startswith("custom:"):
            assert changes.custom is not None
            changes.custom[target[7:]] = raw
        else:
            setattr(changes, target, raw)
    if errors:
        raise Invalid("some fields need attention", errors)
    return changes, data
