"""Membership sites and members: registration, login (which identifies the device), logout, password
change and reset. Logging in is the only way to see personal data on pages.

Open registration proves the address before anything exists: the register form only mails a link to
the address given, and following it (choosing the password there) creates the member, identifies
the device and logs in. Whoever types someone else's address gets nothing but an identical answer.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import text
from sqlmodel import Session, col, select

from tenants.accounts.service import get_tenant, normalize_email, validate_email
from tenants.contacts.service import ContactChanges, find_by_email, upsert_by_email
from tenants.conversions.service import enqueue_conversion
from tenants.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from tenants.identity.service import link_visitor
from tenants.isolation import current_tenant_id, get_owned, tenant_session
from tenants.models import Contact, ConversionKind, Evidence, Member, MembershipSite, new_id, utcnow
from tenants.outbox import service as outbox
from tenants.ratelimit import check_failures, check_rate, record_failure
from tenants.security.logins import FAILURE_WINDOW, FAILURES_PER_IP, LoginThrottle, password_matches
from tenants.security.passwords import (
    hash_password,
    require_valid_password,
    verify_password,
)
from tenants.security.tokens import get_signer
from tenants.settings import get_settings
from tenants.tracking.visitors import visitor_of_browser

from .pending import PendingRegistration, load_pending, save_pending
from .sessions import MemberSession, create_session, destroy_all_sessions, destroy_session, read_session

__all__ = [
    "LoginResult",
    "change_password",
    "complete_registration",
    "create_member",
    "create_membership_site",
    "delete_membership_site",
    "disable_member",
    "get_membership_site",
    "list_members",
    "list_membership_sites",
    "log_in",
    "log_out",
    "log_out_everywhere",
    "pending_registration",
    "request_password_reset",
    "request_registration",
    "resend_invitation",
    "reset_password",
    "update_membership_site",
]

RESET_PURPOSE = "password-reset"
RESET_MAX_AGE = 3600
INVITE_MAX_AGE = 7 * 24 * 3600
MAIL_TASK = "trailmark.mail.send"
MEMBER_LOGINS = LoginThrottle("login")
REGISTRATION_PURPOSE = "registration"
REGISTRATION_MAX_AGE = 24 * 3600
REGISTRATIONS_PER_ADDRESS = 5
"""Per site and address an hour: a stranger cannot flood someone's inbox with links."""
REGISTRATIONS_PER_IP = 30
REGISTRATION_WINDOW = 3600
MAX_NEXT_PATH = 2048


def create_membership_site(
    session: Session, *, name: str, registration: str = "invite", landing_page_slug: str | None = None
) -> MembershipSite:
    if not 1 <= len(name.strip()) <= 200:
        raise Invalid("the membership site is invalid", {"name": "must be 1 to 200 characters"})
    if registration not in ("open", "invite"):
        raise Invalid("the membership site is invalid", {"registration": "must be 'open' or 'invite'"})
    site = MembershipSite(name=name.strip(), registration=registration, landing_page_slug=landing_page_slug)
    session.add(site)
    session.flush()
    return site


def get_membership_site(session: Session, site_id: UUID) -> MembershipSite:
    return get_owned(session, MembershipSite, site_id, "membership site")


def registration_is_open(tenant_id: UUID, site_id: UUID) -> bool:
    """Whether anyone may register on the site (else only the tenant adds members); NotFound for no such site."""
    with tenant_session(tenant_id) as session:
        return get_membership_site(session, site_id).registration == "open"


def list_membership_sites(session: Session) -> list[MembershipSite]:
    return list(session.exec(select(MembershipSite).order_by(col(MembershipSite.id))))


def update_membership_site(
    session: Session, site_id: UUID, *, name: str | None, registration: str | None, landing_page_slug: str | None
) -> MembershipSite:
    site = get_membership_site(session, site_id)
    if name is not None:
        site.name = name.strip()[:200]
    if registration is not None:
        if registration not in ("open", "invite"):
            raise Invalid("the membership site is invalid", {"registration": "must be 'open' or 'invite'"})
        site.registration = registration
    if landing_page_slug is not None:
        site.landing_page_slug = landing_page_slug or None
    session.add(site)
    return site


def delete_membership_site(session: Session, site_id: UUID) -> None:
    session.delete(get_membership_site(session, site_id))


def list_members(session: Session, site_id: UUID) -> list[Member]:
    get_membership_site(session, site_id)
    return list(session.exec(select(Member).where(Member.membership_site_id == site_id).order_by(col(Member.id))))


def membership_url(session: Session, site_id: UUID, path: str) -> str:
    return f"{get_settings().base_url}/s/{get_tenant(session).slug}/m/{site_id}/{path}"


def _password_token(member: Member) -> str:
    changed = int(member.password_changed_at.timestamp()) if member.password_changed_at else 0
    return get_signer().sign(RESET_PURPOSE, member.tenant_id, member.id, pc=changed)


def _send_invitation(session: Session, site: MembershipSite, member: Member, email: str) -> None:
    """Mail the link that sets a first password (a fresh one each time, valid for 7 days)."""
    link = membership_url(session, site.id, f"password/set?token={_password_token(member)}")
    body = f"You have been invited to {site.name}.\n\nChoose your password here (valid for 7 days):\n{link}\n"
    outbox.enqueue(session, MAIL_TASK, email, f"Your access to {site.name}", body)


def create_member(
    session: Session, *, site_id: UUID, email: str, first_name: str | None = None, last_name: str | None = None
) -> Member:
    """Make a contact a member (creating the contact if new) and email a link to set a password."""
    site = get_membership_site(session, site_id)
    contact, _ = upsert_by_email(session, ContactChanges(email=email, first_name=first_name, last_name=last_name))
    existing = session.exec(
        select(Member).where(Member.membership_site_id == site.id, Member.contact_id == contact.id)
    ).first()
    if existing is not None:
        raise Conflict("this contact is already a member of this site")
    member = Member(membership_site_id=site.id, contact_id=contact.id)
    session.add(member)
    session.flush()
    _send_invitation(session, site, member, contact.email)
    return member


def resend_invitation(session: Session, site_id: UUID, member_id: UUID) -> Member:
    """Mail a member who has no password yet a fresh invitation link. A member with a password
    resets it instead (the reset link proves they still read that mailbox)."""
    site = get_membership_site(session, site_id)
    member = session.get(Member, (current_tenant_id(session), member_id))
    if member is None or member.membership_site_id != site.id:
        raise NotFound("member not found")
    if member.disabled:
        raise Conflict("this member is disabled")
    if member.password_hash is not None:
        raise Conflict("this member already has a password; they can reset it from the login page")
    contact = session.get(Contact, (member.tenant_id, member.contact_id))
    if contact is None:
        raise NotFound("member not found")
    _send_invitation(session, site, member, contact.email)
    return member


def disable_member(session: Session, site_id: UUID, member_id: UUID) -> Member:
    """Shut a member out: no login, no emailed link works, and every live session ends."""
    site = get_membership_site(session, site_id)
    member = session.get(Member, (current_tenant_id(session), member_id))
    if member is None or member.membership_site_id != site.id:
        raise NotFound("member not found")
    member.disabled = True
    session.add(member)
    session.flush()
    destroy_all_sessions(member.tenant_id, member.id)
    return member


def _member_by_email(session: Session, site_id: UUID, email: str) -> Member | None:
    contact = find_by_email(session, email)
    if contact is None:
        return None
    return session.exec(
        select(Member).where(Member.membership_site_id == site_id, Member.contact_id == contact.id)
    ).first()


@dataclass(frozen=True)
class LoginResult:
    session: MemberSession
    visitor_token: str
    landing_page_slug: str | None
    """Where a member goes after logging in when no page asked for the login."""
    next_path: str | None = None
    """The page that asked for the login (kept across the registration mail)."""


def _start_session(
    session: Session,
    member: Member,
    *,
    presented_session: str | None,
    visitor_tokens: tuple[str | None, ...],
    new_contact: bool = False,
) -> LoginResult:
    """Rotate: the session id the browser offered dies; a new one is made. The device is identified."""
    tenant_id = current_tenant_id(session)
    site = get_membership_site(session, member.membership_site_id)
    if presented_session:
        destroy_session(tenant_id, presented_session)
    now_ms = int(utcnow().timestamp() * 1000)
    browser = visitor_of_browser(tenant_id, *visitor_tokens, first_hit=(new_id(), now_ms))
    member_session = create_session(
        tenant_id, member.id, member.contact_id, member.membership_site_id, browser.visitor_id
    )
    member.last_login_at = utcnow()
    session.add(member)
    link_visitor(
        session,
        visitor_id=browser.visitor_id,
        contact_id=member.contact_id,
        evidence=Evidence.LOGIN,
        detail={"membership_site_id": str(member.membership_site_id)},
        new_contact=new_contact,
    )
    # While the login lives, a forwarded email link cannot re-point this device.
    session.execute(
        text("UPDATE visitors SET logged_in_until = :until WHERE tenant_id = :t AND id = :v"),
        {"until": datetime.fromtimestamp(member_session.expires_at, UTC), "t": tenant_id, "v": browser.visitor_id},
    )
    return LoginResult(member_session, browser.token, site.landing_page_slug)


def log_in(
    tenant_id: UUID,
    site_id: UUID,
    *,
    email: str,
    password: str,
    ip: str | None,
    presented_session: str | None,
    visitor_tokens: tuple[str | None, ...],
) -> LoginResult:
    """Check the password (throttled per account+address and per address) and start a session."""
    account = f"{site_id}:{email.strip().lower()}"
    MEMBER_LOGINS.check(tenant_id, account, ip)
    with tenant_session(tenant_id) as session:
        get_membership_site(session, site_id)
        member = _member_by_email(session, site_id, email)
        password_hash = member.password_hash if member and member.password_hash and not member.disabled else None
        if not password_matches(password_hash, password) or member is None:
            MEMBER_LOGINS.failed(tenant_id, account, ip)
            raise Unauthorized("the email or password is not right")
        MEMBER_LOGINS.succeeded(tenant_id, account, ip)
        return _start_session(session, member, presented_session=presented_session, visitor_tokens=visitor_tokens)


def _link_invalid() -> Invalid:
    # No "register again" here: the page offers Register itself, and only where anyone may register.
    return Invalid("this link is not valid or has expired", {"token": "invalid"})


def _refuse_if_registered(member: Member | None) -> None:
    """Every registration link of an address dies once its member has a password (or is disabled)."""
    if member is not None and member.disabled:
        raise _link_invalid()
    if member is not None and member.password_hash is not None:
        raise Invalid(
            "this link was already used: you have an account; log in, or reset your password", {"token": "used"}
        )


def request_registration(
    tenant_id: UUID,
    site_id: UUID,
    *,
    email: str,
    first_name: str | None,
    next_path: str | None,
    ip: str | None,
) -> None:
    """Open registration, first step: mail the address a link that proves it (valid for a day), or,
    if it already belongs to a member, a reminder that they have an account. Writes nothing to the
    database and answers the same for every address (throttled per address and per IP)."""
    address = normalize_email(email)
    if errors := validate_email(address):
        raise Invalid("the registration is invalid", errors)
    if first_name is not None and len(first_name.strip()) > 200:
        raise Invalid("the registration is invalid", {"first_name": "must be at most 200 characters"})
    with tenant_session(tenant_id) as session:
        site = get_membership_site(session, site_id)
        if site.registration != "open":
            raise Forbidden("this membership site is by invitation only")
        if ip:
            check_rate(tenant_id, "register-ip", ip, limit=REGISTRATIONS_PER_IP, window_seconds=REGISTRATION_WINDOW)
        check_rate(
            tenant_id,
            "register-address",
            f"{site_id}:{address.lower()}",
            limit=REGISTRATIONS_PER_ADDRESS,
            window_seconds=REGISTRATION_WINDOW,
        )
        member = _member_by_email(session, site_id, address)
        if member is not None and member.disabled:
            return  # the tenant shut this account: nothing to send, and the answer stays the same
        if member is not None and member.password_hash is not None:
            _send_account_reminder(session, site, address)
            return
        pending = save_pending(
            tenant_id,
            site.id,
            email=address,
            first_name=(first_name or "").strip() or None,
            next_path=next_path if next_path and len(next_path) <= MAX_NEXT_PATH else None,
            lifetime_seconds=REGISTRATION_MAX_AGE,
        )
        token = get_signer().sign(REGISTRATION_PURPOSE, tenant_id, pending.id)
        link = membership_url(session, site.id, f"register/confirm?token={token}")
        body = (
            f"Someone (we hope you) asked to register with this address at {site.name}.\n\n"
            f"Confirm it and choose your password here (valid for 24 hours):\n{link}\n\n"
            "If it was not you, ignore this message: nothing happens without the link.\n"
        )
        outbox.enqueue(session, MAIL_TASK, address, f"Confirm your email for {site.name}", body)


def _send_account_reminder(session: Session, site: MembershipSite, email: str) -> None:
    login = membership_url(session, site.id, "login")
    reset = membership_url(session, site.id, "password/reset")
    body = (
        f"Someone (we hope you) tried to register with this address at {site.name}, "
        "but you already have an account.\n\n"
        f"Log in here:\n{login}\n\nForgot your password? Reset it here:\n{reset}\n\n"
        "If it was not you, ignore this message: your account is unchanged.\n"
    )
    outbox.enqueue(session, MAIL_TASK, email, f"You already have an account at {site.name}", body)


def _verified_registration(session: Session, site_id: UUID, token: str) -> PendingRegistration:
    """The registration an emailed link proves, still usable; raises a clear refusal otherwise."""
    tenant_id = current_tenant_id(session)
    claims = get_signer().verify(token, REGISTRATION_PURPOSE, tenant_id, max_age=REGISTRATION_MAX_AGE)
    pending = load_pending(tenant_id, claims.subject) if claims else None
    if pending is None or pending.place_id != site_id:
        raise _link_invalid()
    site = get_membership_site(session, site_id)
    if site.registration != "open":
        raise Forbidden("this membership site is by invitation only")
    _refuse_if_registered(_member_by_email(session, site_id, pending.email))
    return pending


def pending_registration(tenant_id: UUID, site_id: UUID, token: str) -> PendingRegistration:
    """What an emailed registration link stands for, before its password is chosen (the link stays
    usable: a mail scanner opening it uses nothing up)."""
    with tenant_session(tenant_id) as session:
        return _verified_registration(session, site_id, token)


def complete_registration(
    tenant_id: UUID,
    site_id: UUID,
    *,
    token: str,
    password: str,
    presented_session: str | None,
    visitor_tokens: tuple[str | None, ...],
) -> LoginResult:
    """Open registration, second step (the address is proved by the link): create the member with
    this password and log in on this device. Once the member has a password every link is refused."""
    with tenant_session(tenant_id) as session:
        pending = _verified_registration(session, site_id, token)  # a dead link says so, whatever the password
        require_valid_password(password)
        # Serialises completions for one address (the lock lasts to commit): the second finds a password.
        contact, created = upsert_by_email(session, ContactChanges(email=pending.email))
        member = session.exec(
            select(Member)
            .where(Member.membership_site_id == site_id, Member.contact_id == contact.id)
            .with_for_update()
        ).first()
        _refuse_if_registered(member)
        # The name typed at registration fills a blank; it never replaces a name the tenant holds.
        if pending.first_name and not contact.first_name:
            contact.first_name = pending.first_name
            session.add(contact)
        if member is None:
            member = Member(membership_site_id=site_id, contact_id=contact.id)
        member.password_hash = hash_password(password)
        member.password_changed_at = utcnow()
        session.add(member)
        session.flush()
        enqueue_conversion(session, ConversionKind.COMPLETE_REGISTRATION, member.id)
        result = _start_session(
            session, member, presented_session=presented_session, visitor_tokens=visitor_tokens, new_contact=created
        )
        return replace(result, next_path=pending.next_path)


def _clear_login_on_device(tenant_id: UUID, member_session: MemberSession) -> None:
    if member_session.visitor_id is None:
        return
    with tenant_session(tenant_id) as session:
        session.execute(
            text("UPDATE visitors SET logged_in_until = NULL WHERE tenant_id = :t AND id = :v"),
            {"t": tenant_id, "v": member_session.visitor_id},
        )


def log_out(tenant_id: UUID, session_id: str | None) -> None:
    member_session = read_session(tenant_id, session_id)
    if member_session is None:
        return
    destroy_session(tenant_id, member_session.session_id)
    _clear_login_on_device(tenant_id, member_session)


def log_out_everywhere(tenant_id: UUID, session_id: str | None) -> int:
    member_session = read_session(tenant_id, session_id)
    if member_session is None:
        raise Unauthorized("you are not logged in")
    ended = destroy_all_sessions(tenant_id, UUID(member_session.member_id))
    with tenant_session(tenant_id) as session:
        session.execute(
            text("UPDATE visitors SET logged_in_until = NULL WHERE tenant_id = :t AND contact_id = :c"),
            {"t": tenant_id, "c": member_session.contact_id},
        )
    return ended


def _set_password(session: Session, member: Member, password: str) -> None:
    require_valid_password(password, "new_password")
    member.password_hash = hash_password(password)
    member.password_changed_at = utcnow()
    session.add(member)


def change_password(
    tenant_id: UUID, session_id: str | None, *, current_password: str, new_password: str
) -> LoginResult:
    """Needs the current password; every other session ends and this one gets a new id."""
    member_session = read_session(tenant_id, session_id)
    if member_session is None:
        raise Unauthorized("you are not logged in")
    with tenant_session(tenant_id) as session:
        member = session.get(Member, (tenant_id, UUID(member_session.member_id)))
        if member is None or not member.password_hash or not verify_password(member.password_hash, current_password):
            raise Invalid("the password was not changed", {"current_password": "is not right"})
        _set_password(session, member, new_password)
        destroy_all_sessions(tenant_id, member.id)
        visitor_token = (
            get_signer().sign("visitor", tenant_id, UUID(member_session.visitor_id))
            if member_session.visitor_id
            else None
        )
        return _start_session(session, member, presented_session=None, visitor_tokens=(visitor_token,))


def request_password_reset(tenant_id: UUID, site_id: UUID, email: str, ip: str | None) -> None:
    """Email a reset link if this is a member; answers the same either way (no account discovery)."""
    if ip:
        check_failures(tenant_id, "reset-ip", ip, limit=FAILURES_PER_IP)
        record_failure(tenant_id, "reset-ip", ip, window_seconds=FAILURE_WINDOW)
    with tenant_session(tenant_id) as session:
        site = get_membership_site(session, site_id)
        member = _member_by_email(session, site_id, email)
        if member is None or member.disabled:
            return
        contact_email = find_by_email(session, email)
        assert contact_email is not None
        link = membership_url(session, site.id, f"password/set?token={_password_token(member)}")
        body = (
            f"Someone asked to reset your password for {site.name}.\n\n"
            f"Set a new one here (valid for 1 hour):\n{link}\n\nIf it was not you, ignore this message.\n"
        )
        outbox.enqueue(session, MAIL_TASK, contact_email.email, f"Reset your password for {site.name}", body)


def reset_password(tenant_id: UUID, site_id: UUID, token: str, new_password: str) -> None:
    """Set a password from an emailed link (invitation or reset): single use, time-limited; every
    session of the member ends."""
    signer = get_signer()
    claims = signer.verify(token, RESET_PURPOSE, tenant_id, max_age=INVITE_MAX_AGE)
    if claims is None:
        raise Invalid("this link is not valid or has expired", {"token": "invalid"})
    with tenant_session(tenant_id) as session:
        member = session.get(Member, (tenant_id, claims.subject))
        if member is None or member.membership_site_id != site_id or member.disabled:
            raise Invalid("this link is not valid or has expired", {"token": "invalid"})
        changed = int(member.password_changed_at.timestamp()) if member.password_changed_at else 0
        if not hmac.compare_digest(str(claims.extra.get("pc")), str(changed)):
            raise Invalid("this link was already used", {"token": "used"})
        # A reset (a password existed) is valid for an hour; a first invitation for a week.
        if member.password_hash and utcnow().timestamp() - claims.issued_at > RESET_MAX_AGE:
            raise Invalid("this link has expired", {"token": "expired"})
        _set_password(session, member, new_password)
    destroy_all_sessions(tenant_id, claims.subject)
