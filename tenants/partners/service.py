"""The tenant's side of the partner program: programs and the products that earn in them, partners and their
lifecycle (applied → approved, rejected or suspended), and referral and promo codes. The REST API, the dashboard
and the portal's application all come through here."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tenants.accounts.service import get_tenant, normalize_email, validate_email
from tenants.contacts.service import ContactChanges, emails_of, get_contact, upsert_by_email
from tenants.errors import Conflict, Invalid, NotFound
from tenants.isolation import get_owned
from tenants.memberships.service import MAIL_TASK
from tenants.models import (
    CodeKind,
    Partner,
    PartnerCode,
    PartnerStatus,
    Program,
    ProgramProduct,
    ReferrerRule,
    SharedReferralFields,
    utcnow,
)
from tenants.outbox import service as outbox
from tenants.partners.referrals import CODE_PATTERN, normalize_code
from tenants.settings import get_settings

__all__ = [
    "CommissionRate",
    "ProgramSettings",
    "create_code",
    "create_partner",
    "create_program",
    "delete_product",
    "get_partner",
    "get_program",
    "list_codes",
    "list_partners",
    "list_products",
    "list_programs",
    "partner_emails",
    "portal_url",
    "referral_link",
    "set_code_active",
    "set_partner_status",
    "set_product",
    "update_partner",
    "update_program",
]

MAX_BASIS_POINTS = 10_000
SELF_REFERRAL_POLICIES = ("refuse", "hold")
TRANSITIONS: dict[PartnerStatus, frozenset[PartnerStatus]] = {
    PartnerStatus.APPROVED: frozenset({PartnerStatus.APPLIED, PartnerStatus.REJECTED, PartnerStatus.SUSPENDED}),
    PartnerStatus.REJECTED: frozenset({PartnerStatus.APPLIED}),
    PartnerStatus.SUSPENDED: frozenset({PartnerStatus.APPROVED}),
}
"""To each status, the statuses a partner may come from (approving again lifts a suspension or a rejection)."""


@dataclass
class ProgramSettings:
    """A program's terms; on update, None leaves a field as it is (``recurring_months`` uses ``clear_recurring``)."""

    name: str | None = None
    landing_url: str | None = None
    currency: str | None = None
    referrer_rule: str | None = None
    cookie_window_days: int | None = None
    tiers: int | None = None
    hold_days: int | None = None
    minimum_payout: int | None = None
    recurring_months: int | None = None
    clear_recurring: bool = False
    self_referral: str | None = None
    shared_referral_fields: str | None = None
    auto_approve: bool | None = None


def _validated_program(values: ProgramSettings) -> dict[str, Any]:  # noqa: PLR0912 - one check per field
    errors: dict[str, str] = {}
    changes: dict[str, Any] = {}
    if values.name is not None:
        if not values.name.strip() or len(values.name) > 200:
            errors["name"] = "must be 1 to 200 characters"
        changes["name"] = values.name.strip()
    if values.landing_url is not None:
        if not values.landing_url.startswith(("https://", "http://")) or len(values.landing_url) > 4096:
            errors["landing_url"] = "must be an http(s) URL of the tenant's site"
        changes["landing_url"] = values.landing_url
    if values.currency is not None:
        if len(values.currency) != 3 or not values.currency.isalpha():
            errors["currency"] = "must be an ISO 4217 code such as EUR"
        changes["currency"] = values.currency.upper()
    if values.referrer_rule is not None:
        if values.referrer_rule not in {r.value for r in ReferrerRule}:
            errors["referrer_rule"] = "must be first or last"
        changes["referrer_rule"] = values.referrer_rule
    for name, low, high in (("cookie_window_days", 1, 365), ("hold_days", 0, 365), ("tiers", 1, 2)):
        value = getattr(values, name)
        if value is not None:
            if not low <= value <= high:
                errors[name] = f"must be {low} to {high}"
            changes[name] = value
    if values.minimum_payout is not None:
        if values.minimum_payout < 0:
            errors["minimum_payout"] = "must be 0 or more (minor units)"
        changes["minimum_payout"] = values.minimum_payout
    if values.clear_recurring:
        changes["recurring_months"] = None
    elif values.recurring_months is not None:
        if not 0 <= values.recurring_months <= 1200:
            errors["recurring_months"] = "must be 0 to 1200 (or null: for the subscription's life)"
        changes["recurring_months"] = values.recurring_months
    if values.self_referral is not None:
        if values.self_referral not in SELF_REFERRAL_POLICIES:
            errors["self_referral"] = "must be refuse or hold"
        changes["self_referral"] = values.self_referral
    if values.shared_referral_fields is not None:
        if values.shared_referral_fields not in {s.value for s in SharedReferralFields}:
            errors["shared_referral_fields"] = "must be none, masked or full"
        changes["shared_referral_fields"] = values.shared_referral_fields
    if values.auto_approve is not None:
        changes["auto_approve"] = values.auto_approve
    if errors:
        raise Invalid("the program is invalid", errors)
    return changes


def create_program(session: Session, values: ProgramSettings) -> Program:
    """A program; ``name``, ``landing_url`` and ``currency`` are required."""
    missing = {f: "is required" for f in ("name", "landing_url", "currency") if getattr(values, f) is None}
    if missing:
        raise Invalid("the program is invalid", missing)
    program = Program(**_validated_program(values))
    session.add(program)
    session.flush()
    return program


def get_program(session: Session, program_id: UUID) -> Program:
    return get_owned(session, Program, program_id, "program")


def list_programs(session: Session) -> list[Program]:
    return list(session.exec(select(Program).order_by(col(Program.created_at))))


def update_program(session: Session, program_id: UUID, values: ProgramSettings) -> Program:
    """Only what is given changes. A rate or rule change applies from now on (commissions copy their rate)."""
    program = get_program(session, program_id)
    for name, value in _validated_program(values).items():
        setattr(program, name, value)
    program.updated_at = utcnow()
    session.add(program)
    session.flush()
    return program


@dataclass(frozen=True)
class CommissionRate:
    """``percent``: ``value`` in basis points (1250 = 12.5 %); ``flat``: minor units of the program's currency."""

    kind: str
    value: int


def _checked_rate(rate: CommissionRate | None, field: str, errors: dict[str, str]) -> None:
    if rate is None:
        return
    if rate.kind not in ("percent", "flat"):
        errors[f"{field}.kind"] = "must be percent or flat"
    elif rate.value < 0 or (rate.kind == "percent" and rate.value > MAX_BASIS_POINTS):
        errors[f"{field}.value"] = "must be 0 to 10000 basis points" if rate.kind == "percent" else "must be 0 or more"


def set_product(
    session: Session, program_id: UUID, product: str, level1: CommissionRate, level2: CommissionRate | None
) -> ProgramProduct:
    """Add a product to the program, or change its rates (past commissions keep the rate they copied)."""
    get_program(session, program_id)
    errors: dict[str, str] = {}
    if not product.strip() or len(product) > 200:
        errors["product"] = "must be 1 to 200 characters"
    _checked_rate(level1, "level1", errors)
    _checked_rate(level2, "level2", errors)
    if errors:
        raise Invalid("the product is invalid", errors)
    row = session.get(ProgramProduct, (get_program(session, program_id).tenant_id, program_id, product))
    if row is None:
        row = ProgramProduct(program_id=program_id, product=product, level1_kind=level1.kind, level1_value=0)
    row.level1_kind, row.level1_value = level1.kind, level1.value
    row.level2_kind, row.level2_value = (level2.kind, level2.value) if level2 else (None, None)
    session.add(row)
    session.flush()
    return row


def list_products(session: Session, program_id: UUID) -> list[ProgramProduct]:
    get_program(session, program_id)
    query = select(ProgramProduct).where(ProgramProduct.program_id == program_id)
    return list(session.exec(query.order_by(col(ProgramProduct.product))))


def delete_product(session: Session, program_id: UUID, product: str) -> None:
    program = get_program(session, program_id)
    row = session.get(ProgramProduct, (program.tenant_id, program_id, product))
    if row is None:
        raise NotFound("product not found in this program")
    session.delete(row)


def create_partner(
    session: Session,
    *,
    program_id: UUID,
    email: str,
    first_name: str | None = None,
    last_name: str | None = None,
    parent_partner_id: UUID | None = None,
    payout_email: str | None = None,
    status: PartnerStatus = PartnerStatus.APPLIED,
) -> Partner:
    """A partner for the contact with this email (found or made); 409 when that person is a partner already.
    An approved partner gets a referral link code at once."""
    program = get_program(session, program_id)
    address = normalize_email(email)
    errors = validate_email(address)
    if payout_email is not None:
        errors |= validate_email(normalize_email(payout_email), "payout_email")
    if errors:
        raise Invalid("the partner is invalid", errors)
    if parent_partner_id is not None:
        parent = get_owned(session, Partner, parent_partner_id, "parent partner")
        if parent.program_id != program.id:
            raise Invalid("the partner is invalid", {"parent_partner_id": "must be a partner of the same program"})
    contact, _ = upsert_by_email(session, ContactChanges(email=address, first_name=first_name, last_name=last_name))
    if session.exec(select(Partner).where(Partner.contact_id == contact.id)).first() is not None:
        raise Conflict(f"{address} is a partner already")
    partner = Partner(
        program_id=program.id,
        contact_id=contact.id,
        status=status,
        parent_partner_id=parent_partner_id,
        payout_email=normalize_email(payout_email) if payout_email else None,
    )
    session.add(partner)
    session.flush()
    if status == PartnerStatus.APPROVED:
        _ensure_link_code(session, partner)
    return partner


def get_partner(session: Session, partner_id: UUID) -> Partner:
    return get_owned(session, Partner, partner_id, "partner")


def list_partners(
    session: Session, *, program_id: UUID | None = None, status: PartnerStatus | None = None
) -> list[Partner]:
    query = select(Partner)
    if program_id is not None:
        query = query.where(Partner.program_id == program_id)
    if status is not None:
        query = query.where(Partner.status == status)
    return list(session.exec(query.order_by(col(Partner.created_at))))


def update_partner(
    session: Session, partner_id: UUID, *, payout_email: str | None = None, parent_partner_id: UUID | None = None
) -> Partner:
    """Change the payout address or the recruiting partner (given values only)."""
    partner = get_partner(session, partner_id)
    if payout_email is not None:
        address = normalize_email(payout_email)
        if errors := validate_email(address, "payout_email"):
            raise Invalid("the partner is invalid", errors)
        partner.payout_email = address
    if parent_partner_id is not None:
        parent = get_owned(session, Partner, parent_partner_id, "parent partner")
        if parent.id == partner.id or parent.program_id != partner.program_id or parent.parent_partner_id == partner.id:
            raise Invalid("the partner is invalid", {"parent_partner_id": "must be another partner of the program"})
        partner.parent_partner_id = parent.id
    session.add(partner)
    session.flush()
    return partner


def set_partner_status(session: Session, partner_id: UUID, status: PartnerStatus) -> Partner:
    """Approve, reject or suspend (409 from a status that does not lead there). Approval gives the partner a link
    code and mails it the portal's address; a suspended partner's codes stop recording clicks until approved again."""
    partner = get_partner(session, partner_id)
    if partner.status == status:
        return partner
    if PartnerStatus(partner.status) not in TRANSITIONS[status]:
        raise Conflict(f"a partner who is {partner.status} cannot be {status}")
    partner.status = status
    partner.status_changed_at = utcnow()
    session.add(partner)
    session.flush()
    if status == PartnerStatus.APPROVED:
        _ensure_link_code(session, partner)
        contact = get_contact(session, partner.contact_id)
        program = get_program(session, partner.program_id)
        body = (
            f"You are now a partner of {program.name}.\n\n"
            f"Log in to see your referral links and what they earn:\n{portal_url(session, 'login')}\n\n"
            f"No password yet? Choose one here:\n{portal_url(session, 'password/reset')}\n"
        )
        outbox.enqueue(session, MAIL_TASK, contact.email, f"You are a partner of {program.name}", body)
    return partner


def portal_url(session: Session, path: str) -> str:
    return f"{get_settings().base_url}/p/{get_tenant(session).slug}/{path}"


def _ensure_link_code(session: Session, partner: Partner) -> None:
    has_link = session.exec(
        select(PartnerCode.id).where(PartnerCode.partner_id == partner.id, PartnerCode.kind == CodeKind.LINK)
    ).first()
    if has_link is None:
        contact = get_contact(session, partner.contact_id)
        stem = "".join(ch for ch in (contact.first_name or contact.email.split("@")[0]).lower() if ch.isalnum())
        code = f"{stem[:20] or 'p'}-{secrets.token_hex(3)}"
        session.add(PartnerCode(partner_id=partner.id, code=code, kind=CodeKind.LINK))
        session.flush()


def create_code(session: Session, *, partner_id: UUID, code: str, kind: CodeKind) -> PartnerCode:
    """A referral link code or a promo code; 422 for a code outside ``[a-z0-9-]{2,64}``, 409 when the tenant
    already has it."""
    get_partner(session, partner_id)
    value = normalize_code(code)
    if not CODE_PATTERN.match(value):
        raise Invalid("the code is invalid", {"code": "must be 2 to 64 of a-z, 0-9 and -"})
    if session.exec(select(PartnerCode.id).where(PartnerCode.code == value)).first() is not None:
        raise Conflict(f"the code {value} is taken")
    row = PartnerCode(partner_id=partner_id, code=value, kind=kind)
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # the same code made at the same moment
        raise Conflict(f"the code {value} is taken") from None
    return row


def list_codes(session: Session, *, partner_id: UUID | None = None) -> list[PartnerCode]:
    query = select(PartnerCode)
    if partner_id is not None:
        query = query.where(PartnerCode.partner_id == partner_id)
    return list(session.exec(query.order_by(col(PartnerCode.created_at))))


def set_code_active(session: Session, code_id: UUID, active: bool) -> PartnerCode:
    """A deactivated code records no more clicks and credits no more orders; past ones stay."""
    row = get_owned(session, PartnerCode, code_id, "code")
    row.active = active
    session.add(row)
    session.flush()
    return row


def referral_link(program: Program, code: str, sid: str | None = None) -> str:
    """``landing_url`` with ``ref=code`` (and ``sid``) added to its query."""
    parts = urlsplit(program.landing_url)
    params = {"ref": code, **({"sid": sid} if sid else {})}
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, parts.fragment))


def partner_emails(session: Session, partner_ids: set[UUID]) -> dict[UUID, str]:
    """Each partner's email (partners are contacts), for lists that name partners."""
    if not partner_ids:
        return {}
    contact_of = dict(
        session.exec(select(Partner.id, Partner.contact_id).where(col(Partner.id).in_(partner_ids))).all()
    )
    emails = emails_of(session, set(contact_of.values()))
    return {partner_id: emails.get(contact_id, "(erased)") for partner_id, contact_id in contact_of.items()}
