"""SQLModel tables. Importing this package registers every table on ``SQLModel.metadata``."""

from tenants.models.accounts import ApiKey, Scope, Tenant, TenantUser, UserRole
from tenants.models.base import TenantOwned, new_id, utcnow
from tenants.models.outbox import OutboxMessage

__all__ = [
    "ApiKey",
    "OutboxMessage",
    "Scope",
    "Tenant",
    "TenantOwned",
    "TenantUser",
    "UserRole",
    "new_id",
    "utcnow",
]
