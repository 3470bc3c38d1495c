"""The partner portal's accounts and pages: applying (the address proved by a mailed link before anything is
stored), logging in and out, resetting a password, and what a partner reads about its own referrals.

Sessions are the one session store's (``tenants.sessions``) with the members' timeouts; failed logins are
throttled as members' are (``tenants.security.logins``). Every page read runs in a
:func:`~tenants.isolation.partner_session`, so PostgreSQL shows it only the partner's own rows.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field
from datetime import date, datetime
from uuid import UUID

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from tenants import sessions as store
from tenants.accounts.service import normalize_email, validate_email
from tenants.contacts.service import find_by_email, get_contact
from tenants.errors import Forbidden, Invalid, NotFound, Unauthorized
from tenants.isolation import current_tenant_id, partner_session, tenant_session
from tenants.memberships.pending import PendingRegistration, load_pending, save_pending
from tenants.memberships.service import MAIL_TASK
from tenants.models import (
    Contact,
    ContactReferrer,
    Partner,
    PartnerAccount,
    PartnerCode,
    PartnerStatus,
    Program,
    PurchaseCredit,
    ReferralClick,
    SharedReferralFields,
    utcnow,
)
from tenants.outbox import service as outbox
from tenants.partners.commissions import commission_totals, list_commissions
from tenants.partners.payouts import list_payouts, next_payout
from tenants.partners.report import PartnersReport, partners_report
from tenants.partners.service import (
    create_partner,
    get_program,
    list_programs,
    portal_url,
    referral_link,
    update_partner,
)
from tenants.purchases.currencies import format_money
from tenants.ratelimit import check_rate
from tenants.security.logins import LoginThrottle, password_matches
from tenants.security.passwords import hash_password, require_valid_password
from tenants.security.tokens import get_signer

__all__ = [
    "PARTNER_SESSIONS",
    "PortalCommission",
    "PortalHome",
    "PortalLink",
    "PortalLogin",
    "PortalPayout",
    "Referral",
    "SubPartner",
    "application",
    "apply",
    "check_reset_link",
    "commissions",
    "complete_application",
    "home",
    "links",
    "log_in",
    "log_out",
    "partner_of_session",
    "payout_email",
    "payouts",
    "programs_open",
    "referrals",
    "report",
    "request_password_reset",
    "reset_password",
    "sub_partners",
    "update_payout_email",
]

PARTNER_SESSIONS = store.SessionKind(
    name="partner-session",
    index="partner-sessions",
    idle_seconds=lambda settings: settings.session_idle_minutes * 60,
    absolute_seconds=lambda settings: settings.session_absolute_hours * 3600,
)
PARTNER_LOGINS = LoginThrottle("partner-login")
APPLICATION_PURPOSE = "partner-application"
APPLICATION_MAX_AGE = 24 * 3600
APPLICATIONS_PER_ADDRESS = 5
APPLICATIONS_PER_IP = 30
APPLICATION_WINDOW = 3600
PASSWORD_PURPOSE = "partner-password"  # noqa: S105 - a token purpose, not a password
PASSWORD_LINK_MAX_AGE = 3600
RESETS_PER_IP = 30
ACTIVE = (PartnerStatus.APPLIED, PartnerStatus.APPROVED)
"""A rejected or suspended partner cannot log in."""


@dataclass(frozen=True)
class PortalLogin:
    session_id: str
    partner_id: UUID


def _start(
    tenant_id: UUID, partner: Partner, account: PartnerAccount, ip: str | None, presented: str | None
) -> PortalLogin:
    """A fresh session id (the one the browser offered dies); the address is kept for the same-address check."""
    if presented:
        store.destroy(PARTNER_SESSIONS, tenant_id, presented)
    account.last_login_ip = _address(ip)
    stored = store.create(PARTNER_SESSIONS, tenant_id, partner.id)
    return PortalLogin(stored.session_id, partner.id)


def _address(ip: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(ip)) if ip else None
    except ValueError:  # not an address (a test client's name): nothing to compare later
        return None


def partner_of_session(tenant_id: UUID, session_id: str | None) -> UUID | None:
    """The partner behind a portal cookie of this tenant (a cookie of another tenant's portal names nobody here)."""
    stored = store.read(PARTNER_SESSIONS, tenant_id, session_id)
    return stored.user_id if stored else None


def log_out(tenant_id: UUID, session_id: str | None) -> None:
    if session_id:
        store.destroy(PARTNER_SESSIONS, tenant_id, session_id)


def _partner_by_email(session: Session, email: str) -> tuple[Contact, Partner] | None:
    contact = find_by_email(session, email)
    partner = session.exec(select(Partner).where(Partner.contact_id == contact.id)).first() if contact else None
    return (contact, partner) if contact and partner else None


def _account(session: Session, partner: Partner) -> PartnerAccount:
    account = session.get(PartnerAccount, (current_tenant_id(session), partner.id))
    return account or PartnerAccount(partner_id=partner.id)


def log_in(tenant_id: UUID, *, email: str, password: str, ip: str | None, presented_session: str | None) -> PortalLogin:
    """Check the password (throttled like members' logins) and start a portal session."""
    account_key = email.strip().lower()
    PARTNER_LOGINS.check(tenant_id, account_key, ip)
    with tenant_session(tenant_id) as session:
        found = _partner_by_email(session, email)
        account = session.get(PartnerAccount, (tenant_id, found[1].id)) if found else None
        if not password_matches(account.password_hash if account else None, password) or not found or not account:
            PARTNER_LOGINS.failed(tenant_id, account_key, ip)
            raise Unauthorized("the email or password is not right")
        PARTNER_LOGINS.succeeded(tenant_id, account_key, ip)
        _, partner = found
        if partner.status not in ACTIVE:
            raise Forbidden(f"this partner account is {partner.status}; ask the program for the reason")
        login = _start(tenant_id, partner, account, ip, presented_session)
        session.add(account)
        return login


def programs_open(tenant_id: UUID) -> list[tuple[UUID, str]]:
    """The programs a visitor of the portal may apply to (id, name)."""
    with tenant_session(tenant_id) as session:
        return [(program.id, program.name) for program in list_programs(session)]


def apply(tenant_id: UUID, *, program_id: UUID, email: str, first_name: str | None, ip: str | None) -> None:
    """First step of an application: mail the address a link that proves it (24 hours), or a reminder to one that
    is a partner already. Writes nothing to the database and answers the same for every address."""
    address = normalize_email(email)
    if errors := validate_email(address):
        raise Invalid("the application is invalid", errors)
    if first_name is not None and len(first_name.strip()) > 200:
        raise Invalid("the application is invalid", {"first_name": "must be at most 200 characters"})
    with tenant_session(tenant_id) as session:
        program = get_program(session, program_id)
        if ip:
            check_rate(tenant_id, "partner-apply-ip", ip, limit=APPLICATIONS_PER_IP, window_seconds=APPLICATION_WINDOW)
        check_rate(
            tenant_id,
            "partner-apply-address",
            address.lower(),
            limit=APPLICATIONS_PER_ADDRESS,
            window_seconds=APPLICATION_WINDOW,
        )
        if _partner_by_email(session, address) is not None:
            body = (
                f"Someone (we hope you) applied with this address to {program.name}, but you are a partner already.\n\n"
                f"Log in here:\n{portal_url(session, 'login')}\n\n"
                f"Forgot your password? Choose a new one here:\n{portal_url(session, 'password/reset')}\n"
            )
            outbox.enqueue(session, MAIL_TASK, address, f"You are a partner of {program.name} already", body)
            return
        pending = save_pending(
            tenant_id,
            program.id,
            email=address,
            first_name=(first_name or "").strip() or None,
            next_path=None,
            lifetime_seconds=APPLICATION_MAX_AGE,
        )
        token = get_signer().sign(APPLICATION_PURPOSE, tenant_id, pending.id)
        body = (
            f"Someone (we hope you) applied with this address to the partner program {program.name}.\n\n"
            f"Confirm it and choose your password here (valid for 24 hours):\n"
            f"{portal_url(session, f'apply/confirm?token={token}')}\n\n"
            "If it was not you, ignore this message: nothing happens without the link.\n"
        )
        outbox.enqueue(session, MAIL_TASK, address, f"Confirm your application to {program.name}", body)


def _link_invalid() -> Invalid:
    return Invalid("this link is not valid or has expired; apply again", {"token": "invalid"})


def application(tenant_id: UUID, token: str) -> PendingRegistration:
    """What an emailed application link stands for (opening it uses nothing up: mail scanners open links)."""
    claims = get_signer().verify(token, APPLICATION_PURPOSE, tenant_id, max_age=APPLICATION_MAX_AGE)
    pending = load_pending(tenant_id, claims.subject) if claims else None
    if pending is None:
        raise _link_invalid()
    return pending


def complete_application(
    tenant_id: UUID, *, token: str, password: str, ip: str | None, presented_session: str | None
) -> PortalLogin:
    """Second step (the address is proved): the partner, approved at once if the program auto-approves, else
    waiting for the tenant; its account with this password; and a portal session."""
    pending = application(tenant_id, token)
    require_valid_password(password)
    with tenant_session(tenant_id) as session:
        program = get_program(session, pending.place_id)
        if _partner_by_email(session, pending.email) is not None:
            raise Invalid("this link was already used: you are a partner; log in", {"token": "used"})
        status = PartnerStatus.APPROVED if program.auto_approve else PartnerStatus.APPLIED
        partner = create_partner(
            session, program_id=program.id, email=pending.email, first_name=pending.first_name, status=status
        )
        now = utcnow()
        account = PartnerAccount(
            partner_id=partner.id, password_hash=hash_password(password), password_changed_at=now, email_verified_at=now
        )
        session.add(account)
        session.flush()
        return _start(tenant_id, partner, account, ip, presented_session)


def _password_token(account: PartnerAccount, partner: Partner) -> str:
    changed = int(account.password_changed_at.timestamp()) if account.password_changed_at else 0
    return get_signer().sign(PASSWORD_PURPOSE, partner.tenant_id, partner.id, pc=changed)


def request_password_reset(tenant_id: UUID, email: str, ip: str | None) -> None:
    """Mail a link to choose a password (1 hour, single use) if this is an active partner, also one the tenant
    added who never had a password; answers the same either way."""
    if ip:
        check_rate(tenant_id, "partner-reset-ip", ip, limit=RESETS_PER_IP, window_seconds=APPLICATION_WINDOW)
    with tenant_session(tenant_id) as session:
        found = _partner_by_email(session, email)
        if found is None or found[1].status not in ACTIVE:
            return
        contact, partner = found
        link = portal_url(session, f"password/set?token={_password_token(_account(session, partner), partner)}")
        body = (
            f"Choose your partner portal password here (valid for 1 hour):\n{link}\n\nNot you? Ignore this message.\n"
        )
        outbox.enqueue(session, MAIL_TASK, contact.email, "Your partner portal password", body)


def _reset_target(session: Session, token: str) -> tuple[Partner, PartnerAccount]:
    tenant_id = current_tenant_id(session)
    claims = get_signer().verify(token, PASSWORD_PURPOSE, tenant_id, max_age=PASSWORD_LINK_MAX_AGE)
    partner = session.get(Partner, (tenant_id, claims.subject)) if claims else None
    if claims is None or partner is None or partner.status not in ACTIVE:
        raise Invalid("this link is not valid or has expired", {"token": "invalid"})
    account = _account(session, partner)
    changed = int(account.password_changed_at.timestamp()) if account.password_changed_at else 0
    if not hmac.compare_digest(str(claims.extra.get("pc")), str(changed)):
        raise Invalid("this link was already used", {"token": "used"})
    return partner, account


def check_reset_link(tenant_id: UUID, token: str) -> str:
    """The email a live password link is for."""
    with tenant_session(tenant_id) as session:
        partner, _ = _reset_target(session, token)
        return get_contact(session, partner.contact_id).email


def reset_password(
    tenant_id: UUID, *, token: str, password: str, ip: str | None, presented_session: str | None
) -> PortalLogin:
    """Set the password from a mailed link (which also proves the address); every other session ends."""
    require_valid_password(password)
    with tenant_session(tenant_id) as session:
        partner, account = _reset_target(session, token)
        now = utcnow()
        account.password_hash = hash_password(password)
        account.password_changed_at = now
        account.email_verified_at = account.email_verified_at or now
        store.destroy_all(PARTNER_SESSIONS, tenant_id, partner.id)
        login = _start(tenant_id, partner, account, ip, presented_session)
        session.add(account)
        return login


# What a partner reads, always inside its partner_session.

MAX_COMMISSIONS = 500


@dataclass(frozen=True)
class PortalHome:
    name: str
    status: str
    program: str
    clicks: int
    leads: int
    """New contacts the partner referred: those it is the first referrer of (as the partners report counts)."""
    tiers: int
    customers: int = 0
    """Distinct buyers of the purchases credited to the partner."""
    pending: list[str] = field(default_factory=list)
    approved: list[str] = field(default_factory=list)
    paid: list[str] = field(default_factory=list)
    next_payout: list[str] = field(default_factory=list)
    """Approved and on no payout yet, per currency (refund adjustments included)."""
    minimum_payout: str = ""


def _me(session: Session) -> tuple[Partner, Program]:
    partner = session.exec(select(Partner)).first()  # the partner scope shows exactly one
    if partner is None:
        raise NotFound("this partner does not exist")
    program = session.exec(select(Program)).one()
    return partner, program


def home(tenant_id: UUID, partner_id: UUID) -> PortalHome:
    with partner_session(tenant_id, partner_id) as session:
        partner, program = _me(session)
        contact = get_contact(session, partner.contact_id)
        clicks = session.exec(select(func.count()).select_from(ReferralClick)).one()
        # A lead as the partners report counts it: a new contact the partner referred (its first referrer).
        leads = session.exec(
            select(func.count(func.distinct(ContactReferrer.contact_id))).where(ContactReferrer.position == "first")
        ).one()
        # purchases shows a portal nothing: the credit rows are the partner's own.
        customers = session.exec(
            select(func.count(func.distinct(PurchaseCredit.contact_id))).where(PurchaseCredit.status != "refused")
        ).one()
        totals = commission_totals(session, partner.id)
        return PortalHome(
            contact.first_name or contact.email,
            partner.status,
            program.name,
            int(clicks),
            int(leads),
            program.tiers,
            customers=int(customers),
            pending=_money(totals.pending),
            approved=_money(totals.approved),
            paid=_money(totals.paid),
            next_payout=_money(next_payout(session, partner.id)),
            minimum_payout=format_money(program.minimum_payout, program.currency),
        )


def _money(totals: dict[str, int]) -> list[str]:
    return [format_money(amount, currency) for currency, amount in sorted(totals.items())]


@dataclass(frozen=True)
class PortalCommission:
    created_at: datetime
    level: int
    kind: str
    status: str
    amount: str
    earned: str
    payable_at: datetime | None
    reason: str


def commissions(tenant_id: UUID, partner_id: UUID) -> list[PortalCommission]:
    """The partner's commissions, newest first, with their hold end and the reason for each."""
    with partner_session(tenant_id, partner_id) as session:
        return [
            PortalCommission(
                c.created_at,
                c.level,
                str(c.kind).replace("_", " "),
                str(c.status),
                format_money(c.amount, c.currency),
                format_money(c.earned_amount, c.currency),
                c.payable_at,
                c.reason,
            )
            for c in list_commissions(session, partner_id=partner_id, limit=MAX_COMMISSIONS)
        ]


@dataclass(frozen=True)
class PortalPayout:
    created_at: datetime
    amount: str
    status: str
    paid_at: datetime | None
    reference: str | None


def payouts(tenant_id: UUID, partner_id: UUID) -> list[PortalPayout]:
    with partner_session(tenant_id, partner_id) as session:
        return [
            PortalPayout(
                p.created_at, format_money(p.amount, p.currency), str(p.status), p.paid_at, p.external_reference
            )
            for p in list_payouts(session, partner_id=partner_id)
        ]


@dataclass(frozen=True)
class PortalLink:
    code: str
    kind: str
    active: bool
    url: str | None
    """The referral link (with the SubID asked for); None for a promo code."""
    clicks: int


def links(tenant_id: UUID, partner_id: UUID, sid: str | None) -> list[PortalLink]:
    """The partner's codes, each link with ``sid`` added (the SubID builder) and its clicks so far."""
    with partner_session(tenant_id, partner_id) as session:
        _, program = _me(session)
        counts = dict(
            session.exec(select(ReferralClick.code_id, func.count()).group_by(col(ReferralClick.code_id))).all()
        )
        return [
            PortalLink(
                code.code,
                code.kind,
                code.active,
                referral_link(program, code.code, sid) if code.kind == "link" else None,
                int(counts.get(code.id, 0)),
            )
            for code in session.exec(select(PartnerCode).order_by(col(PartnerCode.created_at)))
        ]


@dataclass(frozen=True)
class Referral:
    who: str
    """As the program shares it: the full name and email, masked, or nothing."""
    position: str
    bound_at: datetime
    reason: str


def _masked(contact: Contact) -> str:
    local, _, domain = contact.email.partition("@")
    name = f"{contact.first_name[0]}." if contact.first_name else ""
    return " ".join(filter(None, [name, f"{local[:1]}•••@{domain}"]))


def referrals(tenant_id: UUID, partner_id: UUID) -> tuple[SharedReferralFields, list[Referral]]:
    """The contacts the partner referred, newest first, shown as the program shares them."""
    with partner_session(tenant_id, partner_id) as session:
        _, program = _me(session)
        shared = SharedReferralFields(program.shared_referral_fields)
        rows = session.exec(
            select(ContactReferrer, Contact)
            .join(Contact, col(Contact.id) == col(ContactReferrer.contact_id))
            .order_by(col(ContactReferrer.bound_at).desc())
            .limit(500)
        ).all()
        result = []
        for bound, contact in rows:
            if shared == SharedReferralFields.FULL:
                who = " ".join(filter(None, [contact.first_name, contact.last_name, f"<{contact.email}>"]))
            elif shared == SharedReferralFields.MASKED:
                who = _masked(contact)
            else:
                who = "a referred contact"
            result.append(Referral(who, bound.position, bound.bound_at, bound.reason))
        return shared, result


@dataclass(frozen=True)
class SubPartner:
    who: str
    status: str
    joined_at: datetime


_SUB_PARTNERS = text(
    """SELECT c.first_name, c.email, p.status, p.created_at FROM partners p
       JOIN contacts c ON c.tenant_id = p.tenant_id AND c.id = p.contact_id
       WHERE p.tenant_id = :t AND p.parent_partner_id = :me ORDER BY p.created_at DESC LIMIT 500"""
)


def sub_partners(tenant_id: UUID, partner_id: UUID) -> list[SubPartner]:
    """The partners this one recruited (masked). Their rows are walled off from the partner scope, so this one read
    runs tenant-scoped, narrowed to ``parent_partner_id`` and to masked names."""
    with tenant_session(tenant_id) as session:
        rows = session.execute(_SUB_PARTNERS, {"t": tenant_id, "me": partner_id}).all()
        return [
            SubPartner(_masked(Contact(email=email, first_name=first_name)), status, created_at)
            for first_name, email, status, created_at in rows
        ]


def report(tenant_id: UUID, partner_id: UUID, start: date, end: date) -> PartnersReport:
    """The partners report of this partner alone: its totals per day and SubID (the scope shows no other)."""
    with partner_session(tenant_id, partner_id) as session:
        return partners_report(session, start=start, end=end, partner_id=partner_id)


def update_payout_email(tenant_id: UUID, partner_id: UUID, payout_email: str) -> str:
    """The partner sets where its payouts go: the tenant's own change (``update_partner``), in the partner's scope."""
    with partner_session(tenant_id, partner_id) as session:
        return update_partner(session, partner_id, payout_email=payout_email).payout_email or ""


def payout_email(tenant_id: UUID, partner_id: UUID) -> str | None:
    with partner_session(tenant_id, partner_id) as session:
        partner, _ = _me(session)
        return partner.payout_email or get_contact(session, partner.contact_id).email
