"""SQLModel tables. Importing this package registers every table on ``SQLModel.metadata``."""

from tenants.models.accounts import ApiKey, AuditEntry, Scope, Tenant, TenantUser, UserRole
from tenants.models.base import TenantOwned, new_id, utcnow
from tenants.models.identity import (
    Contact,
    ContactField,
    EmailLink,
    Evidence,
    FieldType,
    Form,
    FormSubmission,
    IdentityEvent,
    LinkClick,
)
from tenants.models.memberships import Member, MembershipSite, Page
from tenants.models.outbox import OutboxMessage
from tenants.models.partners import (
    CodeKind,
    ContactReferrer,
    Partner,
    PartnerAccount,
    PartnerCode,
    PartnerStatus,
    Program,
    ProgramProduct,
    ReferralClick,
    ReferrerRule,
    SharedReferralFields,
)
from tenants.models.tracking import DEFAULT_PARTNER_PARAMS, Site, Visit, Visitor

__all__ = [
    "DEFAULT_PARTNER_PARAMS",
    "ApiKey",
    "AuditEntry",
    "CodeKind",
    "Contact",
    "ContactField",
    "ContactReferrer",
    "EmailLink",
    "Evidence",
    "FieldType",
    "Form",
    "FormSubmission",
    "IdentityEvent",
    "LinkClick",
    "Member",
    "MembershipSite",
    "OutboxMessage",
    "Page",
    "Partner",
    "PartnerAccount",
    "PartnerCode",
    "PartnerStatus",
    "Program",
    "ProgramProduct",
    "ReferralClick",
    "ReferrerRule",
    "Scope",
    "SharedReferralFields",
    "Site",
    "Tenant",
    "TenantOwned",
    "TenantUser",
    "UserRole",
    "Visit",
    "Visitor",
    "new_id",
    "utcnow",
]
