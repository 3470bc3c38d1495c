"""Sign-up, the caller's tenant, and API-key management."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED

from api.accounts.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    OwnerPublic,
    Signup,
    SignupCreated,
    TenantPublic,
)
from api.openapi import AUTH, BODY, creates, problems
from tenants.accounts import service
from tenants.accounts.service import ApiCaller, NewApiKey
from tenants.models import Scope

__all__ = ["AccountsController", "SignupController"]


def _created_key(new: NewApiKey) -> ApiKeyCreated:
    public = ApiKeyPublic.of(new.key)
    return ApiKeyCreated(**{f: getattr(public, f) for f in public.__struct_fields__}, key=new.secret)


class SignupController(Controller):
    path = "/api/v1/signup"
    tags = ["accounts"]

    @post(
        status_code=HTTP_201_CREATED,
        sync_to_thread=True,
        summary="Sign up a tenant",
        responses=problems(*BODY, 409),
    )
    def signup(self, data: JSONBody[Signup]) -> SignupCreated:
        """Create a tenant with its owner and first API key (all scopes; shown once)."""
        result = service.signup(name=data.name, owner_email=data.owner_email, password=data.password, slug=data.slug)
        return SignupCreated(
            tenant=TenantPublic.of(result.tenant),
            owner=OwnerPublic(id=result.owner.id, email=result.owner.email),
            api_key=_created_key(result.api_key),
        )


class AccountsController(Controller):
    path = "/api/v1"
    tags = ["accounts"]
    security = [{"apiKey": []}]

    @get("/tenant", sync_to_thread=True, summary="The caller's tenant", responses=problems(*AUTH))
    def get_tenant(self, caller: NamedDependency[ApiCaller]) -> TenantPublic:
        """The tenant the API key belongs to (needs ``read``)."""
        with caller.session(Scope.READ) as session:
            return TenantPublic.of(service.get_tenant(session))

    @get("/api-keys", sync_to_thread=True, summary="List API keys", responses=problems(*AUTH))
    def list_api_keys(self, caller: NamedDependency[ApiCaller]) -> list[ApiKeyPublic]:
        """Every key of the tenant, newest first, revoked ones included (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            return [ApiKeyPublic.of(key) for key in service.list_api_keys(session)]

    @post(
        "/api-keys",
        status_code=HTTP_201_CREATED,
        sync_to_thread=True,
        summary="Create an API key",
        responses=problems(*AUTH, *BODY),
        operation_class=creates("key_id", "revokeApiKey"),
        response_description="The new key, with its secret shown this once",
    )
    def create_api_key(self, caller: NamedDependency[ApiCaller], data: JSONBody[ApiKeyCreate]) -> ApiKeyCreated:
        """The response holds the whole key once; only a hash is kept (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            new = service.create_api_key(session, name=data.name, scopes=data.scopes, granted_by=caller)
            return _created_key(new)

    @delete(
        "/api-keys/{key_id:uuid}",
        status_code=200,
        sync_to_thread=True,
        summary="Revoke an API key",
        responses=problems(*AUTH, 400, 404),
    )
    def revoke_api_key(self, caller: NamedDependency[ApiCaller], key_id: FromPath[UUID]) -> ApiKeyPublic:
        """The key stops working at once; revoking twice is harmless (needs ``admin``)."""
        with caller.session(Scope.ADMIN) as session:
            return ApiKeyPublic.of(service.revoke_api_key(session, key_id))
