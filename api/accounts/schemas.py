"""Request and response bodies of sign-up, the tenant and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from tenants.models import ApiKey, Scope, Tenant

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
    name: Annotated[str, msgspec.Meta(max_length=200, description="The business's name")]
    owner_email: Annotated[str, msgspec.Meta(max_length=320)]
    password: Annotated[str, msgspec.Meta(max_length=1024, description="At least 10 characters")]
    slug: Annotated[str | None, msgspec.Meta(description="Public handle; derived from the name if omitted")] = None


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
    name: Annotated[str, msgspec.Meta(max_length=100)]
    scopes: list[Scope] = msgspec.field(default_factory=lambda: [Scope.READ])


class ApiKeyPublic(msgspec.Struct):
    id: UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyPublic:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
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
