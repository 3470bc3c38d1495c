"""Bodies of the privacy API: erasures with their reports, the retention policy, and a person's export."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from tenants.models import Erasure, ErasureStatus, PrivacySettings
from tenants.privacy.retention import MAX_ANONYMOUS_MONTHS, MAX_IDENTIFIED_MONTHS

__all__ = ["ErasurePublic", "PersonExport", "RetentionPolicy", "RetentionUpdate"]


class ErasurePublic(msgspec.Struct):
    """An erasure request and, once ``done``, what it did. Holds no personal data."""

    id: UUID
    contact_id: Annotated[UUID, msgspec.Meta(description="The person; after the erase, an anonymous placeholder")]
    status: Annotated[
        ErasureStatus,
        msgspec.Meta(
            description="awaiting_confirmation (a member asked), queued, done, declined, or failed "
            "(nothing erased; ask again)"
        ),
    ]
    requested_via: Annotated[str, msgspec.Meta(description="api, dashboard or member")]
    requested_by: Annotated[str, msgspec.Meta(description="api_key:<id>, staff:<id> or member:<id>")]
    requested_at: datetime
    confirmed_by: str | None
    confirmed_at: datetime | None
    finished_at: datetime | None
    report: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="Once done: rows deleted, anonymised and kept by table, sessions ended, queued tasks "
            "cancelled, conversions; who asked and when"
        ),
    ]

    @classmethod
    def of(cls, erasure: Erasure) -> ErasurePublic:
        return cls(
            id=erasure.id,
            contact_id=erasure.contact_id,
            status=ErasureStatus(erasure.status),
            requested_via=erasure.requested_via,
            requested_by=erasure.requested_by,
            requested_at=erasure.requested_at,
            confirmed_by=erasure.confirmed_by,
            confirmed_at=erasure.confirmed_at,
            finished_at=erasure.finished_at,
            report=erasure.report,
        )


AnonymousMonths = Annotated[
    int,
    msgspec.Meta(
        ge=1,
        le=MAX_ANONYMOUS_MONTHS,
        description="Anonymous visitors and their visits are deleted this many months after their last activity",
    ),
]
IdentifiedMonths = Annotated[
    int,
    msgspec.Meta(
        ge=1,
        le=MAX_IDENTIFIED_MONTHS,
        description="Identified contacts' visits are deleted this many months after they happened",
    ),
]


class RetentionPolicy(msgspec.Struct):
    anonymous_visitor_months: AnonymousMonths
    identified_visit_months: Annotated[
        IdentifiedMonths | None, msgspec.Meta(description="null: kept until the person is erased")
    ]
    last_expired_at: Annotated[datetime | None, msgspec.Meta(description="When the expiry job last ran")]
    last_expired_visitors: Annotated[int, msgspec.Meta(description="Visitors that run deleted")]
    last_expired_visits: Annotated[int, msgspec.Meta(description="Visits that run deleted")]

    @classmethod
    def of(cls, policy: PrivacySettings) -> RetentionPolicy:
        return cls(
            anonymous_visitor_months=policy.anonymous_visitor_months,
            identified_visit_months=policy.identified_visit_months,
            last_expired_at=policy.last_expired_at,
            last_expired_visitors=policy.last_expired_visitors,
            last_expired_visits=policy.last_expired_visits,
        )


class RetentionUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The whole policy (an omitted ``identified_visit_months`` means: keep them until erased)."""

    anonymous_visitor_months: AnonymousMonths = 13
    identified_visit_months: IdentifiedMonths | None = None


class PersonExport(msgspec.Struct):
    """Every row of every table that names the person (the contact, contacts merged into it) or their browsers,
    as each table holds it; credentials left out."""

    format: Annotated[str, msgspec.Meta(description="trailmark.person-export.v1")]
    contact_id: UUID
    exported_at: datetime
    tables: Annotated[dict[str, list[dict[str, Any]]], msgspec.Meta(description="Rows by table name")]
