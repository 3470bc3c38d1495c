"""Tenant sign-up and API keys: who may act for a tenant."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tenants.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from tenants.isolation import current_tenant_id, get_owned, tenant_session
from tenants.models import ApiKey, Scope, Tenant, TenantUser, UserRole, new_id, utcnow
from tenants.security.passwords import hash_password, password_problem

__all__ = [
    "ApiCaller",
    "NewApiKey",
    "SignupResult",
    "authenticate_api_key",
    "create_api_key",
    "get_api_key",
    "get_tenant",
    "list_api_keys",
    "revoke_api_key",
    "signup",
]

API_KEY_PREFIX = "tm"
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is refreshed at most this often, so authenticating is usually a read."""
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class ApiCaller:
    """The tenant and key behind an authenticated API request."""

    tenant_id: UUID
    api_key_id: UUID
    scopes: frozenset[str]

    def require(self, scope: Scope) -> None:
        if scope.value not in self.scopes:
            raise Forbidden(f"this API key lacks the {scope.value!r} scope")

    @contextmanager
    def session(self, scope: Scope) -> Iterator[Session]:
        """A session scoped to the caller's tenant, once the key is shown to hold ``scope``."""
        self.require(scope)
        with tenant_session(self.tenant_id) as session:
            yield session


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKey
    secret: str
    """The full key; shown once, never stored."""


@dataclass(frozen=True)
class SignupResult:
    tenant: Tenant
    owner: TenantUser
    api_key: NewApiKey


def normalize_email(email: str) -> str:
    email = email.strip()
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def validate_email(email: str, field: str = "email") -> dict[str, str]:
    if len(email) > 320 or not EMAIL_PATTERN.match(email):
        return {field: "must be an email address like name@example.com"}
    return {}


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40].strip("-")
    return slug or "tenant"


def signup(*, name: str, owner_email: str, password: str, slug: str | None = None) -> SignupResult:
    """Create a tenant, its owner and its first API key (all scopes) in one transaction."""
    name = name.strip()
    email = normalize_email(owner_email)
    errors: dict[str, str] = {}
    if not 1 <= len(name) <= 200:
        errors["name"] = "must be 1 to 200 characters"
    errors.update(validate_email(email, "owner_email"))
    if (problem := password_problem(password)) is not None:
        errors["password"] = problem
    if slug is not None and not SLUG_PATTERN.match(slug):
        errors["slug"] = "must be lowercase letters, digits and dashes (1-63), not starting or ending with a dash"
    if errors:
        raise Invalid("the sign-up is invalid", errors)

    password_hash = hash_password(password)
    candidates = [slug] if slug else [slugify(name)] + [f"{slugify(name)}-{secrets.token_hex(3)}" for _ in range(3)]
    for candidate in candidates:
        tenant_id = new_id()
        try:
            with tenant_session(tenant_id) as session:
                tenant = Tenant(id=tenant_id, name=name, slug=candidate)
                session.add(tenant)
                session.flush()
                owner = TenantUser(email=email, password_hash=password_hash, role=UserRole.OWNER)
                session.add(owner)
                session.flush()
                api_key = create_api_key(session, name="default", scopes=list(Scope), created_by=owner.id)
                return SignupResult(tenant=tenant, owner=owner, api_key=api_key)
        except IntegrityError as error:
            if "tenants_slug_key" not in str(error.orig):
                raise
    if slug:
        raise Conflict(f"the slug {slug!r} is taken")
    raise Conflict("could not find a free slug for this name; pass one explicitly")


def get_tenant(session: Session) -> Tenant:
    """The session's own tenant."""
    tenant = session.get(Tenant, current_tenant_id(session))
    if tenant is None:
        raise NotFound("tenant not found")
    return tenant


def create_api_key(
    session: Session,
    *,
    name: str,
    scopes: list[Scope] | list[str],
    created_by: UUID | None = None,
    granted_by: ApiCaller | None = None,
) -> NewApiKey:
    """Mint a key; the caller shows ``secret`` once, only its SHA-256 is kept. A key minted through
    another key (``granted_by``) gets no scope that key lacks."""
    name = name.strip()
    errors: dict[str, str] = {}
    if not 1 <= len(name) <= 100:
        errors["name"] = "must be 1 to 100 characters"
    known = {s.value for s in Scope}
    unknown = sorted(set(map(str, scopes)) - known)
    if unknown or not scopes:
        errors["scopes"] = f"must be a non-empty subset of {sorted(known)}"
    elif granted_by is not None and not {str(s) for s in scopes} <= granted_by.scopes:
        raise Forbidden("a key cannot grant scopes it does not have")
    if errors:
        raise Invalid("the API key is invalid", errors)
    tenant_id = current_tenant_id(session)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        prefix=secret[:8],
        secret_hash=_hash_secret(secret),
        scopes=sorted({str(s) for s in scopes}),
        created_by=created_by,
    )
    session.add(key)
    session.flush()
    return NewApiKey(key=key, secret=f"{API_KEY_PREFIX}_{tenant_id.hex}_{secret}")


def list_api_keys(session: Session) -> list[ApiKey]:
    """All keys of the tenant, newest first, revoked ones included (marked)."""
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.id).desc())))


def get_api_key(session: Session, key_id: UUID) -> ApiKey:
    """One of the tenant's keys (its hash and metadata; the secret is never kept)."""
    return get_owned(session, ApiKey, key_id, "API key")


def revoke_api_key(session: Session, key_id: UUID) -> ApiKey:
    """Revoke a key at once; revoking twice is harmless."""
    key = get_owned(session, ApiKey, key_id, "API key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
    return key


def authenticate_api_key(raw: str) -> ApiCaller:
    """Resolve ``tm_<tenant>_<secret>`` to its tenant and scopes, or raise :class:`Unauthorized`."""
    prefix, _, rest = raw.partition("_")
    tenant_hex, _, secret = rest.partition("_")
    try:
        tenant_id = UUID(hex=tenant_hex)
    except ValueError:
        tenant_id = None
    if prefix != API_KEY_PREFIX or tenant_id is None or not secret or len(secret) > 100:
        raise Unauthorized("the API key is malformed")
    with tenant_session(tenant_id) as session:
        key = session.exec(select(ApiKey).where(ApiKey.secret_hash == _hash_secret(secret))).first()
        if key is None:
            raise Unauthorized("unknown API key")
        if key.revoked_at is not None:
            raise Unauthorized("this API key has been revoked")
        now = utcnow()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            key.last_used_at = now
            session.add(key)
        return ApiCaller(tenant_id=tenant_id, api_key_id=key.id, scopes=frozenset(key.scopes))


def _hash_secret(secret: str) -> str:
    # The secret has 256 random bits: a fast hash is enough and keeps lookups indexable.
    return hashlib.sha256(secret.encode()).hexdigest()
