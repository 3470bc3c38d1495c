"""Staff: logging in (throttled without locking the real user out), password change and reset, invitations,
roles and removal. The dashboard calls these; nothing here knows about HTTP.

Throttling has three layers, so an attacker's failures cannot keep the real user out:

- per workspace, email and address: ``FAILURES_PER_ACCOUNT_AND_IP`` in ``FAILURE_WINDOW`` (tight: one
  address guessing one account);
- per address across every workspace and account: ``FAILURES_PER_IP`` in ``FAILURE_WINDOW`` (one address
  spraying many accounts);
- per account across addresses: after ``ACCOUNT_FREE_FAILURES`` a delay that doubles with each failure, capped at
  ``ACCOUNT_MAX_DELAY`` seconds: a distributed guesser is slowed, while the owner waits at most that long, and a
  password reset (which always works) clears it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from uuid import UUID

from sqlmodel import Session, col, func, select

from tenants.accounts.service import get_tenant, normalize_email, validate_email
from tenants.audit.service import record_action
from tenants.errors import Conflict, Forbidden, Invalid, NotFound, RateLimited, Unauthorized
from tenants.isolation import current_tenant_id, get_owned, tenant_session
from tenants.isolation.public_keys import tenant_of_public_key
from tenants.models import TenantUser, UserRole
from tenants.outbox import service as outbox
from tenants.ratelimit import (
    backoff_remaining,
    check_failures,
    check_rate,
    clear_backoff,
    clear_failures,
    record_backoff_failure,
    record_failure,
)
from tenants.security.passwords import (
    hash_password,
    require_valid_password,
    verify_password,
)
from tenants.security.tokens import get_signer
from tenants.settings import get_settings

from . import invitations
from .invitations import INVITATION_LIFETIME, StaffInvitation
from .sessions import end_staff_sessions

__all__ = [
    "ACCOUNT_FREE_FAILURES",
    "ACCOUNT_MAX_DELAY",
    "FAILURES_PER_ACCOUNT_AND_IP",
    "FAILURES_PER_IP",
    "StaffMember",
    "accept_invitation",
    "authenticate_staff",
    "change_own_password",
    "change_role",
    "check_reset_link",
    "invite_staff",
    "list_invitations",
    "list_staff",
    "pending_invitation",
    "remove_staff",
    "request_password_reset",
    "resend_invitation",
    "reset_password",
    "revoke_invitation",
    "staff_member",
]

FAILURES_PER_ACCOUNT_AND_IP = 5
FAILURES_PER_IP = 50
FAILURE_WINDOW = 15 * 60
ACCOUNT_FREE_FAILURES = 10
ACCOUNT_MAX_DELAY = 60
ACCOUNT_WINDOW = 3600
RESET_PURPOSE = "staff-password-reset"
RESET_MAX_AGE = 3600
RESETS_PER_ADDRESS = 5
"""Reset mails per workspace and address an hour: nobody's inbox is flooded."""
RESETS_PER_IP = 30
RESET_WINDOW = 3600
INVITATION_PURPOSE = "staff-invitation"
MAIL_TASK = "trailmark.mail.send"
WRONG_LOGIN = "the workspace, email or password is wrong"

_DECOY_HASH = hash_password("not a password anyone has")
"""Verified against when the workspace or email is unknown, so timing does not tell which part was wrong."""


@dataclass(frozen=True)
class StaffMember:
    tenant_id: UUID
    user_id: UUID
    email: str
    role: UserRole


def _member(user: TenantUser) -> StaffMember:
    return StaffMember(user.tenant_id, user.id, user.email, UserRole(user.role))


def _user_by_email(session: Session, email: str) -> TenantUser | None:
    return session.exec(select(TenantUser).where(func.lower(col(TenantUser.email)) == email.strip().lower())).first()


def authenticate_staff(workspace: str, email: str, password: str, ip: str | None = None) -> StaffMember:
    """The staff member with this workspace (tenant slug), email and password; :class:`Unauthorized` when
    wrong, :class:`RateLimited` (with the seconds to wait) while throttled."""
    address = email.strip().lower()
    tenant_id = tenant_of_public_key("tenant_slug", workspace.strip().lower())
    if ip:
        check_failures(None, "staff-login-ip", ip, limit=FAILURES_PER_IP)
    if tenant_id is not None:
        check_failures(tenant_id, "staff-login", f"{address}:{ip}", limit=FAILURES_PER_ACCOUNT_AND_IP)
        wait = backoff_remaining(
            tenant_id, "staff-login-account", address, free=ACCOUNT_FREE_FAILURES, max_delay=ACCOUNT_MAX_DELAY
        )
        if wait:
            raise RateLimited("too many failed logins to this account; wait and try again", retry_after=wait)
    user = None
    if tenant_id is not None:
        with tenant_session(tenant_id) as session:
            user = _user_by_email(session, address)
            if user is not None:
                session.expunge(user)
    valid = verify_password(user.password_hash if user else _DECOY_HASH, password) and user is not None
    if not valid or user is None:
        if ip:
            record_failure(None, "staff-login-ip", ip, window_seconds=FAILURE_WINDOW)
        if tenant_id is not None:
            record_failure(tenant_id, "staff-login", f"{address}:{ip}", window_seconds=FAILURE_WINDOW)
            record_backoff_failure(tenant_id, "staff-login-account", address, window_seconds=ACCOUNT_WINDOW)
        raise Unauthorized(WRONG_LOGIN)
    clear_failures(user.tenant_id, "staff-login", f"{address}:{ip}")
    clear_backoff(user.tenant_id, "staff-login-account", address)
    return _member(user)


def staff_member(tenant_id: UUID, user_id: UUID) -> StaffMember | None:
    """The staff member behind a session, as the database has them now (a removed user is None)."""
    with tenant_session(tenant_id) as session:
        user = session.get(TenantUser, (tenant_id, user_id))
        return _member(user) if user else None


def list_staff(session: Session) -> list[TenantUser]:
    """Every staff member of the tenant, strongest role first, then by email."""
    users = list(session.exec(select(TenantUser)))
    return sorted(users, key=lambda u: (-UserRole(u.role).rank, u.email.lower()))


def change_own_password(
    tenant_id: UUID, user_id: UUID, *, current_password: str, new_password: str, keep: str | None
) -> int:
    """Needs the current password; every other session of the user ends (``keep`` is this one's cookie).
    Returns how many ended. Audited as ``staff.password_change``."""
    with tenant_session(tenant_id) as session:
        user = get_owned(session, TenantUser, user_id, "staff member")
        if not verify_password(user.password_hash, current_password):
            raise Invalid("the password was not changed", {"current_password": "is not right"})
        require_valid_password(new_password, "new_password")
        user.password_hash = hash_password(new_password)
        session.add(user)
        record_action(
            session,
            actor_id=user.id,
            actor_email=user.email,
            action="staff.password_change",
            subject=f"staff:{user.id}",
        )
    return end_staff_sessions(tenant_id, user_id, keep=keep)


# Password reset ------------------------------------------------------------------------------------------------


def _password_fingerprint(user: TenantUser) -> str:
    """Changes whenever the password does, so a reset link dies once any new password is set."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def _dashboard_url(session: Session, path: str, token: str) -> str:
    return f"{get_settings().base_url}/app/{path}?workspace={get_tenant(session).slug}&token={token}"


def request_password_reset(workspace: str, email: str, ip: str | None) -> None:
    """Mail a reset link (valid for an hour, usable once) if this is a staff member of this workspace. Answers
    the same for every workspace and address (throttled per address and per IP alike, so the limit tells
    nothing either)."""
    address = normalize_email(email)
    if errors := validate_email(address):
        raise Invalid("the reset request is invalid", errors)
    if ip:
        check_rate(None, "staff-reset-ip", ip, limit=RESETS_PER_IP, window_seconds=RESET_WINDOW)
    tenant_id = tenant_of_public_key("tenant_slug", workspace.strip().lower())
    if tenant_id is None:
        return
    check_rate(tenant_id, "staff-reset", address.lower(), limit=RESETS_PER_ADDRESS, window_seconds=RESET_WINDOW)
    with tenant_session(tenant_id) as session:
        user = _user_by_email(session, address)
        if user is None:
            return
        token = get_signer().sign(RESET_PURPOSE, tenant_id, user.id, ph=_password_fingerprint(user))
        link = _dashboard_url(session, "password-reset/confirm", token)
        tenant = get_tenant(session)
        body = (
            f"Someone (we hope you) asked to reset your Trailmark password for the workspace {tenant.name}.\n\n"
            f"Choose a new one here (valid for 1 hour, once):\n{link}\n\n"
            "If it was not you, ignore this message: your password is unchanged.\n"
        )
        outbox.enqueue(session, MAIL_TASK, user.email, "Reset your Trailmark password", body)


def _link_invalid() -> Invalid:
    return Invalid("this link is not valid, was already used or has expired; ask for a new one", {"token": "invalid"})


def _reset_target(session: Session, token: str) -> TenantUser:
    """The user a reset link is for, locked to commit (of two uses of one link at once, the second sees the
    new password and is refused)."""
    tenant_id = current_tenant_id(session)
    claims = get_signer().verify(token, RESET_PURPOSE, tenant_id, max_age=RESET_MAX_AGE)
    user = (
        session.exec(
            select(TenantUser)
            .where(TenantUser.id == claims.subject)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()
        if claims
        else None
    )
    if claims is None or user is None:
        raise _link_invalid()
    if not hmac.compare_digest(str(claims.extra.get("ph")), _password_fingerprint(user)):
        raise _link_invalid()
    return user


def _tenant_of_workspace(workspace: str) -> UUID:
    tenant_id = tenant_of_public_key("tenant_slug", workspace.strip().lower())
    if tenant_id is None:
        raise _link_invalid()
    return tenant_id


def check_reset_link(workspace: str, token: str) -> str:
    """The email a reset link is for, while it is usable (opening it uses nothing up: mail scanners open links)."""
    with tenant_session(_tenant_of_workspace(workspace)) as session:
        return _reset_target(session, token).email


def reset_password(workspace: str, token: str, new_password: str) -> StaffMember:
    """Set a new password from a reset link: once, within the hour. Every session of the user ends and the
    login throttle of the account is cleared; the caller logs them in afresh. Audited as ``staff.password_reset``."""
    tenant_id = _tenant_of_workspace(workspace)
    with tenant_session(tenant_id) as session:
        user = _reset_target(session, token)
        require_valid_password(new_password, "new_password")
        user.password_hash = hash_password(new_password)
        session.add(user)
        record_action(
            session, actor_id=user.id, actor_email=user.email, action="staff.password_reset", subject=f"staff:{user.id}"
        )
        member = _member(user)
    end_staff_sessions(tenant_id, member.user_id)
    clear_backoff(tenant_id, "staff-login-account", member.email.lower())
    return member


# Invitations ---------------------------------------------------------------------------------------------------


def _role(value: str) -> UserRole:
    try:
        return UserRole(value)
    except ValueError:
        raise Invalid(
            "the role is invalid", {"role": f"must be one of {', '.join(r.value for r in UserRole)}"}
        ) from None


def _mail_invitation(session: Session, invitation: StaffInvitation) -> None:
    token = get_signer().sign(INVITATION_PURPOSE, current_tenant_id(session), invitation.id, n=invitation.sends)
    link = _dashboard_url(session, "invitation", token)
    tenant = get_tenant(session)
    body = (
        f"{invitation.invited_by} invited you to the Trailmark workspace {tenant.name} as {invitation.role.value}.\n\n"
        f"Choose your password here (valid for 72 hours, once):\n{link}\n"
    )
    outbox.enqueue(session, MAIL_TASK, invitation.email, f"You are invited to {tenant.name} on Trailmark", body)


def list_invitations(session: Session) -> list[StaffInvitation]:
    """The tenant's pending invitations, oldest first."""
    return invitations.load_all(current_tenant_id(session))


def invite_staff(session: Session, *, email: str, role: str, invited_by: str) -> StaffInvitation:
    """Mail ``email`` a link that makes them staff with ``role`` once they choose a password (72 hours, once)."""
    address = normalize_email(email)
    errors = validate_email(address)
    chosen = _role(role)
    if errors:
        raise Invalid("the invitation is invalid", errors)
    if _user_by_email(session, address) is not None:
        raise Conflict("this address already belongs to a staff member")
    if any(i.email.lower() == address.lower() for i in list_invitations(session)):
        raise Conflict("this address is already invited; re-send that invitation instead")
    invitation = invitations.save(current_tenant_id(session), email=address, role=chosen, invited_by=invited_by)
    _mail_invitation(session, invitation)
    return invitation


def _pending(session: Session, invitation_id: UUID) -> StaffInvitation:
    invitation = invitations.load(current_tenant_id(session), invitation_id)
    if invitation is None:
        raise NotFound("invitation not found")
    return invitation


def resend_invitation(session: Session, invitation_id: UUID) -> StaffInvitation:
    """Mail a fresh link (earlier ones stop working) and restart its 72 hours."""
    invitation = invitations.resent(current_tenant_id(session), _pending(session, invitation_id))
    _mail_invitation(session, invitation)
    return invitation


def revoke_invitation(session: Session, invitation_id: UUID) -> StaffInvitation:
    """Withdraw an invitation: its links stop working at once."""
    invitation = _pending(session, invitation_id)
    invitations.remove(current_tenant_id(session), invitation.id)
    return invitation


def _invitation_of_link(tenant_id: UUID, token: str) -> StaffInvitation:
    claims = get_signer().verify(token, INVITATION_PURPOSE, tenant_id, max_age=INVITATION_LIFETIME)
    invitation = invitations.load(tenant_id, claims.subject) if claims else None
    if claims is None or invitation is None or claims.extra.get("n") != invitation.sends:
        raise _link_invalid()
    return invitation


def pending_invitation(workspace: str, token: str) -> StaffInvitation:
    """What an invitation link stands for, while usable (opening it uses nothing up)."""
    return _invitation_of_link(_tenant_of_workspace(workspace), token)


def accept_invitation(workspace: str, token: str, password: str) -> StaffMember:
    """Become staff with the invited role and this password; the link is used up. Audited as
    ``staff.invitation_accept``."""
    tenant_id = _tenant_of_workspace(workspace)
    invitation = _invitation_of_link(tenant_id, token)
    require_valid_password(password)
    with tenant_session(tenant_id) as session:
        if _user_by_email(session, invitation.email) is not None:
            raise Conflict("this address already belongs to a staff member; log in instead")
        user = TenantUser(email=invitation.email, password_hash=hash_password(password), role=invitation.role)
        session.add(user)
        session.flush()
        record_action(
            session,
            actor_id=user.id,
            actor_email=user.email,
            action="staff.invitation_accept",
            subject=f"staff:{user.id}",
            detail={"role": invitation.role.value, "invited_by": invitation.invited_by},
        )
        # Claimed last: a failure above leaves the invitation usable; of two at once only one claims it.
        if not invitations.claim(tenant_id, invitation.id):
            raise _link_invalid()
        return _member(user)


# Roles and removal ---------------------------------------------------------------------------------------------


def _owners_locked(session: Session) -> list[TenantUser]:
    """Every owner row, locked to commit: two owners demoting or removing each other at once cannot both pass
    the last-owner check."""
    return list(session.exec(select(TenantUser).where(TenantUser.role == UserRole.OWNER).with_for_update()))


def change_role(session: Session, *, actor_id: UUID, user_id: UUID, role: str) -> tuple[TenantUser, UserRole]:
    """Give a staff member another role (not oneself; never leaving no owner). Their sessions end, so the new
    role starts with a new login. Returns the member and their former role."""
    chosen = _role(role)
    owners = _owners_locked(session)
    user = get_owned(session, TenantUser, user_id, "staff member")
    if user.id == actor_id:
        raise Forbidden("you cannot change your own role; ask another owner")
    former = UserRole(user.role)
    if former == UserRole.OWNER and chosen != UserRole.OWNER and len(owners) <= 1:
        raise Conflict("the workspace needs at least one owner")
    if former != chosen:
        user.role = chosen
        session.add(user)
        end_staff_sessions(current_tenant_id(session), user.id)
    return user, former


def remove_staff(session: Session, *, actor_id: UUID, user_id: UUID) -> TenantUser:
    """Remove a staff member (not oneself, never the last owner); their sessions end at once."""
    owners = _owners_locked(session)
    user = get_owned(session, TenantUser, user_id, "staff member")
    if user.id == actor_id:
        raise Forbidden("you cannot remove yourself; ask another owner")
    if UserRole(user.role) == UserRole.OWNER and len(owners) <= 1:
        raise Conflict("the workspace needs at least one owner")
    session.delete(user)
    session.flush()
    end_staff_sessions(current_tenant_id(session), user.id)
    return user
