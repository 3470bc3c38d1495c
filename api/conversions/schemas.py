"""Bodies of the integrations API. Tokens are write-only: accepted here, answered only as ``token_set``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from api.fields import END, NOT_BLANK
from tenants.conversions.integrations import SECRET_FIELDS, SETTING_FIELDS
from tenants.models import (
    Conversion,
    ConversionDelivery,
    ConversionKind,
    DeliveryStatus,
    Integration,
    IntegrationStatus,
    Platform,
)

__all__ = [
    "ConversionActions",
    "ConversionPage",
    "ConversionPublic",
    "DeliveryPublic",
    "EventRules",
    "IntegrationCreate",
    "IntegrationPublic",
    "IntegrationUpdate",
    "TestEventResult",
]

Token = Annotated[
    str,
    msgspec.Meta(
        min_length=8,
        max_length=2048,
        pattern=rf"^[\x21-\x7e]+{END}",
        description="Write-only: stored encrypted, never shown again",
    ),
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
ActionId = Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=rf"^[0-9]+{END}")]
CustomerId = Annotated[
    str,
    msgspec.Meta(
        min_length=10, max_length=12, pattern=rf"^[0-9-]+{END}", description="Ten digits, dashes allowed: 123-456-7890"
    ),
]
EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=rf"^[A-Za-z0-9_.:-]+{END}")]
TestEventCode = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=rf"^[A-Za-z0-9_-]+{END}",
        description="The events manager's test code: test events carry it",
    ),
]


class EventRules(msgspec.Struct, forbid_unknown_fields=True):
    """Which conversions this integration receives. Only the kinds given change: on create a kind left out is
    on, on update it keeps its state; ``custom`` given replaces the list of names."""

    lead: bool | msgspec.UnsetType = msgspec.UNSET
    """A form submission that creates a contact."""
    purchase: bool | msgspec.UnsetType = msgspec.UNSET
    complete_registration: bool | msgspec.UnsetType = msgspec.UNSET
    """A membership registration."""
    custom: Annotated[list[EventName], msgspec.Meta(max_length=50)] | msgspec.UnsetType = msgspec.UNSET
    """Tracked events (``trailmark('event', name)``) by name."""

    def given(self) -> dict[str, Any]:
        """Only the rules the caller sent: a PATCH must not reset the ones it left out."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not msgspec.UNSET}


class CustomAction(msgspec.Struct, forbid_unknown_fields=True):
    event: EventName
    """The tracked event's name."""
    action: ActionId


class ConversionActions(msgspec.Struct, forbid_unknown_fields=True):
    """Google Ads: the conversion action (its numeric id) of each conversion the integration receives;
    LinkedIn: the conversion rule (its numeric id)."""

    lead: ActionId | None = None
    purchase: ActionId | None = None
    complete_registration: ActionId | None = None
    custom: Annotated[list[CustomAction], msgspec.Meta(max_length=50)] = msgspec.field(default_factory=list)
    """Per custom event name."""

    def flat(self) -> dict[str, str | None]:
        return {
            "lead": self.lead,
            "purchase": self.purchase,
            "complete_registration": self.complete_registration,
        } | {c.event: c.action for c in self.custom}


class _Fields(msgspec.Struct, forbid_unknown_fields=True):
    pixel_id: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=25, pattern=rf"^[0-9]+{END}", description="Meta")]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET
    pixel_code: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=rf"^[A-Za-z0-9]+{END}", description="TikTok")]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET
    access_token: Token | msgspec.UnsetType | None = msgspec.UNSET
    """Meta (a system user's token), TikTok (the Events API token) or LinkedIn (a token with the
    ``rw_conversions`` scope)."""
    customer_id: CustomerId | msgspec.UnsetType | None = msgspec.UNSET
    """Google Ads: the account the conversions belong to."""
    login_customer_id: CustomerId | msgspec.UnsetType | None = msgspec.UNSET
    """Google Ads: the manager account, when access goes through one."""
    conversion_actions: ConversionActions | msgspec.UnsetType | None = msgspec.UNSET
    refresh_token: Token | msgspec.UnsetType | None = msgspec.UNSET
    """Google Ads: the OAuth refresh token (the dashboard's Connect stores it for you)."""
    test_event_code: TestEventCode | msgspec.UnsetType | None = msgspec.UNSET
    events: EventRules | msgspec.UnsetType = msgspec.UNSET

    def split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(settings, secrets) as the service takes them: only the fields given."""
        given = {
            name: value
            for name in (
                *{f for fs in SETTING_FIELDS.values() for f in fs},
                *{f for fs in SECRET_FIELDS.values() for f in fs},
            )
            if (value := getattr(self, name)) is not msgspec.UNSET
        }
        if isinstance(given.get("conversion_actions"), ConversionActions):
            given["conversion_actions"] = given["conversion_actions"].flat()
        secret_names = {f for fs in SECRET_FIELDS.values() for f in fs}
        return (
            {k: v for k, v in given.items() if k not in secret_names},
            {k: v for k, v in given.items() if k in secret_names},
        )

    def event_rules(self) -> dict[str, Any] | None:
        return None if isinstance(self.events, msgspec.UnsetType) else self.events.given()


class IntegrationCreate(_Fields, forbid_unknown_fields=True):
    """An ad platform to send conversions to. Meta: ``pixel_id`` + ``access_token``; TikTok: ``pixel_code`` +
    ``access_token``; Google Ads: ``customer_id``, ``conversion_actions`` and ``refresh_token`` (or connect in
    the dashboard). A field of another platform is refused with 422."""

    platform: Literal["meta", "google_ads", "tiktok", "linkedin"] = "meta"
    name: Name | None = None
    site_id: Annotated[UUID, msgspec.Meta(description="Only this site's conversions; all sites when absent")] | None = (
        None
    )


class IntegrationUpdate(_Fields, forbid_unknown_fields=True):
    """What to change; omitted fields stay. A new token replaces the stored one and ends a pause."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    site_id: UUID | msgspec.UnsetType | None = msgspec.UNSET
    """null: every site."""


class IntegrationPublic(msgspec.Struct):
    id: UUID
    platform: Platform
    name: str
    site_id: UUID | None
    pixel_id: str | None
    pixel_code: str | None
    customer_id: str | None
    login_customer_id: str | None
    conversion_actions: dict[str, str]
    test_event_code: str | None
    events: dict[str, Any]
    token_set: bool
    """Whether a token is stored (the token itself is never shown)."""
    token_set_at: datetime | None
    status: IntegrationStatus
    """``paused``: nothing is sent until the tenant reconnects; ``paused_reason`` says why."""
    paused_reason: str | None
    paused_at: datetime | None
    backoff_until: datetime | None
    """The platform's last requests failed (429, 5xx, unreachable): nothing is sent to it before this time."""
    last_failure: str | None
    """What the platform answered the last failed request, while backed off."""
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, integration: Integration) -> IntegrationPublic:
        settings = integration.settings
        return cls(
            id=integration.id,
            platform=integration.platform,
            name=integration.name,
            site_id=integration.site_id,
            pixel_id=settings.get("pixel_id"),
            pixel_code=settings.get("pixel_code"),
            customer_id=settings.get("customer_id"),
            login_customer_id=settings.get("login_customer_id"),
            conversion_actions=dict(settings.get("conversion_actions") or {}),
            test_event_code=settings.get("test_event_code"),
            events=dict(integration.events),
            token_set=integration.secret is not None,
            token_set_at=integration.secret_set_at,
            status=integration.status,
            paused_reason=integration.paused_reason,
            paused_at=integration.paused_at,
            backoff_until=integration.backoff_until,
            last_failure=integration.last_failure,
            created_at=integration.created_at,
            updated_at=integration.updated_at,
        )


class DeliveryPublic(msgspec.Struct):
    integration_id: UUID
    platform: Platform
    status: DeliveryStatus
    """queued (waiting, or retrying), sent, failed (for good) or skipped (never sent): ``reason`` says why."""
    reason: str | None
    attempts: int
    last_attempt_at: datetime | None
    sent_at: datetime | None


class ConversionPublic(msgspec.Struct):
    id: UUID
    kind: ConversionKind
    event_name: str
    event_id: str
    """Meta's ``event_id`` and Google's ``orderId``: give it to your own pixel so the platform counts one."""
    contact_id: UUID | None
    visitor_id: UUID | None
    site_id: UUID | None
    occurred_at: datetime
    value: int | None
    """Minor units of ``currency``."""
    currency: str | None
    order_id: str | None
    touches: dict[str, Any]
    """Per platform, the touch whose click ids it gets: ``source`` is converting_visit, recent_visit or
    first_touch."""
    deliveries: list[DeliveryPublic]
    created_at: datetime

    @classmethod
    def of(cls, conversion: Conversion, deliveries: list[tuple[ConversionDelivery, Integration]]) -> ConversionPublic:
        return cls(
            id=conversion.id,
            kind=conversion.kind,
            event_name=conversion.event_name,
            event_id=conversion.event_id,
            contact_id=conversion.contact_id,
            visitor_id=conversion.visitor_id,
            site_id=conversion.site_id,
            occurred_at=conversion.occurred_at,
            value=conversion.value,
            currency=conversion.currency,
            order_id=conversion.order_id,
            touches=dict(conversion.touches),
            deliveries=[
                DeliveryPublic(
                    integration_id=d.integration_id,
                    platform=i.platform,
                    status=d.status,
                    reason=d.reason,
                    attempts=d.attempts,
                    last_attempt_at=d.last_attempt_at,
                    sent_at=d.sent_at,
                )
                for d, i in deliveries
            ],
            created_at=conversion.created_at,
        )


class ConversionPage(msgspec.Struct):
    items: list[ConversionPublic]
    next_cursor: str | None
    """``cursor`` for the older conversions; null on the last page."""


class TestEventResult(msgspec.Struct):
    delivered: bool
    """Whether the platform accepted it (Meta and TikTok show it under Test events; Google only validates)."""
    detail: str
    """What the platform answered."""
