"""Request and response bodies of sign-up, the tenant and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from api.fields import NOT_BLANK, Email, Slug
from tenants.models import ApiKey, Scope, Tenant
from tenants.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

__all__ = [
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyPublic",
    "OwnerPublic",
    "Signup",
    "SignupCreated",
    "TenantPublic",
]


class Signup(msgspec.Struct, forbid_unknown_fields=True):
    """A new tenant with its owner."""

    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK, description="The business's name")
    ]
    owner_email: Annotated[Email, msgspec.Meta(description="The owner's email; the owner logs in with it")]
    password: Annotated[
        str,
        msgspec.Meta(
            min_length=MIN_PASSWORD_LENGTH,
            max_length=MAX_PASSWORD_LENGTH,
            description=f"The owner's password, {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
        ),
    ]
    slug: Annotated[Slug, msgspec.Meta(description="Public handle; derived from the name if omitted")] | None = None


class TenantPublic(msgspec.Struct):
    id: UUID
    name: str
    slug: str
    created_at: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantPublic:
        return cls(id=tenant.id, name=tenant.name, slug=tenant.slug, created_at=tenant.created_at)


class OwnerPublic(msgspec.Struct):
    id: UUID
    email: str


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new API key; it can get no scope that the key creating it lacks."""

    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=100, pattern=NOT_BLANK, description="What the key is for")
    ]
    scopes: Annotated[
        list[Scope], msgspec.Meta(min_length=1, description="read: read data; write: change it; admin: keys, deletes")
    ] = msgspec.field(default_factory=lambda: [Scope.READ])


class ApiKeyPublic(msgspec.Struct):
    id: UUID
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyPublic:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=[Scope(scope) for scope in key.scopes],
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreated(ApiKeyPublic):
    key: str = ""
    """The whole key. Shown this once; store it now."""


class SignupCreated(msgspec.Struct):
    tenant: TenantPublic
    owner: OwnerPublic
    api_key: ApiKeyCreated
