"""Bodies of the sites, visitors and visits API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast
from uuid import UUID

import msgspec

from api.fields import END, NOT_BLANK, SPACE
from tenants.models import Site, Visit, Visitor, VisitorConsent

__all__ = [
    "ConsentUpdate",
    "SiteCreate",
    "SitePublic",
    "SiteUpdate",
    "VisitPublic",
    "VisitorConsentPublic",
    "VisitorDetail",
    "VisitorPublic",
]


PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
"""0 to 65535."""
ORIGIN = rf"^https?://[^{SPACE}/?#\[\]@:]+(?::{PORT})?/?{END}"
"""``scheme://host[:port]``: what a browser sends as ``Origin`` (stored in lower case, default ports dropped)."""
PARTNER_PARAM = rf"^[A-Za-z0-9_-]*[A-Za-z0-9][A-Za-z0-9_-]*{END}"
"""A query parameter name: letters, digits, - and _, with at least one letter or digit."""

SiteName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK, description="The site's name, for the tenant")
]
Origins = Annotated[
    list[Annotated[str, msgspec.Meta(max_length=300, pattern=ORIGIN)]],
    msgspec.Meta(
        min_length=1,
        max_length=100,
        description="Origins the tracker runs on and forms submit from, like https://shop.example.com",
    ),
]
HonorDnt = Annotated[bool, msgspec.Meta(description="Count browsers sending DNT or GPC without storing them")]
TruncateIp = Annotated[bool, msgspec.Meta(description="Store IP addresses with their last part zeroed")]
PartnerParams = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=PARTNER_PARAM)]],
    msgspec.Meta(max_length=20, description="Query parameters that carry a partner's referral code"),
]
AdsConsent = Annotated[
    Literal["opt_out", "opt_in"],
    msgspec.Meta(
        description="opt_out: conversions reach ad platforms unless the visitor refused (trailmark('consent', "
        "{ads: false})); opt_in: only once the visitor granted ad consent. GPC and DNT mean no where honor_dnt is on"
    ),
]
ConsentMode = Annotated[
    Literal["none", "opt_in", "opt_out"],
    msgspec.Meta(
        description="Analytics consent. none: every browser is tracked; opt_in: nothing is stored and no cookie is "
        "set until the page calls trailmark('consent', {analytics: true}) (until then hits are only counted, "
        "cookieless, in the overview); opt_out: tracked until the visitor says {analytics: false}. GPC and DNT "
        "mean no where honor_dnt is on"
    ),
]
BotPolicy = Annotated[
    Literal["flag", "drop"], msgspec.Meta(description="flag: store bot hits marked as bots; drop: store none")
]


class SiteCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A site that carries the tracker."""

    name: SiteName
    allowed_origins: Origins
    honor_dnt: HonorDnt = True
    truncate_ip: TruncateIp = True
    partner_params: PartnerParams | None = None
    """The usual affiliate parameters when omitted."""
    bot_policy: BotPolicy = "flag"
    ads_consent: AdsConsent = "opt_out"
    consent_mode: ConsentMode = "none"


class SiteUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; omitted fields stay."""

    name: SiteName | msgspec.UnsetType = msgspec.UNSET
    allowed_origins: Origins | msgspec.UnsetType = msgspec.UNSET
    honor_dnt: HonorDnt | msgspec.UnsetType = msgspec.UNSET
    truncate_ip: TruncateIp | msgspec.UnsetType = msgspec.UNSET
    partner_params: PartnerParams | msgspec.UnsetType = msgspec.UNSET
    bot_policy: BotPolicy | msgspec.UnsetType = msgspec.UNSET
    ads_consent: AdsConsent | msgspec.UnsetType = msgspec.UNSET
    consent_mode: ConsentMode | msgspec.UnsetType = msgspec.UNSET


class SitePublic(msgspec.Struct):
    id: UUID
    name: str
    site_key: str
    allowed_origins: list[str]
    honor_dnt: bool
    truncate_ip: bool
    partner_params: list[str]
    bot_policy: BotPolicy
    ads_consent: AdsConsent
    consent_mode: ConsentMode
    snippet: str
    created_at: datetime

    @classmethod
    def of(cls, site: Site, snippet: str) -> SitePublic:
        return cls(
            id=site.id,
            name=site.name,
            site_key=site.site_key,
            allowed_origins=list(site.allowed_origins),
            honor_dnt=site.honor_dnt,
            truncate_ip=site.truncate_ip,
            partner_params=list(site.partner_params),
            bot_policy=cast(BotPolicy, site.bot_policy),  # the service stores only these
            ads_consent=cast(AdsConsent, site.ads_consent),
            consent_mode=cast(ConsentMode, site.consent_mode),
            snippet=snippet,
            created_at=site.created_at,
        )


class VisitPublic(msgspec.Struct):
    hit_id: UUID
    occurred_at: datetime
    visitor_id: UUID
    site_id: UUID
    contact_id: UUID | None
    type: str
    event_name: str | None
    url: str
    path: str
    title: str | None
    referrer: str | None
    utm: dict[str, str]
    click_ids: dict[str, Any]
    ad_cookies: dict[str, Any]
    partner_code: str | None
    is_bot: bool
    bot_reason: str | None
    props: dict[str, Any] | None

    @classmethod
    def of(cls, visit: Visit) -> VisitPublic:
        utm = {
            name: value
            for name in ("source", "medium", "campaign", "term", "content", "id")
            if (value := getattr(visit, f"utm_{name}")) is not None
        }
        return cls(
            hit_id=visit.hit_id,
            occurred_at=visit.occurred_at,
            visitor_id=visit.visitor_id,
            site_id=visit.site_id,
            contact_id=visit.contact_id,
            type=visit.type,
            event_name=visit.event_name,
            url=visit.url,
            path=visit.path,
            title=visit.title,
            referrer=visit.referrer,
            utm=utm,
            click_ids=visit.click_ids,
            ad_cookies=visit.ad_cookies,
            partner_code=visit.partner_code,
            is_bot=visit.is_bot,
            bot_reason=visit.bot_reason,
            props=visit.props,
        )


class VisitorPublic(msgspec.Struct):
    id: UUID
    site_id: UUID | None
    contact_id: UUID | None
    first_seen_at: datetime
    last_seen_at: datetime
    visit_count: int
    is_bot: bool
    first_touch: dict[str, Any] | None
    last_touch: dict[str, Any] | None

    @classmethod
    def of(cls, visitor: Visitor) -> VisitorPublic:
        return cls(
            id=visitor.id,
            site_id=visitor.site_id,
            contact_id=visitor.contact_id,
            first_seen_at=visitor.first_seen_at,
            last_seen_at=visitor.last_seen_at,
            visit_count=visitor.visit_count,
            is_bot=visitor.is_bot,
            first_touch=visitor.first_touch,
            last_touch=visitor.last_touch,
        )


class VisitorDetail(VisitorPublic):
    visits: list[VisitPublic] = msgspec.field(default_factory=list)
    """The first 100 visits, oldest first; page through ``/api/v1/visits?visitor_id=…`` for all."""


class ConsentUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The visitor's answer to the site's consent banner, as your server knows it."""

    ads: Annotated[bool, msgspec.Meta(description="true: ad consent granted; false: refused")]


class VisitorConsentPublic(msgspec.Struct):
    visitor_id: UUID
    ads: bool | None
    """true: granted; false: refused; null: never answered."""
    source: Literal["tracker", "api"] | None
    """Where the answer came from: the tracker (`trailmark('consent', …)`) or this API."""
    changed_at: datetime | None
    """When the answer last changed."""
    privacy_signal: Literal["gpc", "dnt"] | None
    """The browser sent Global Privacy Control or Do Not Track: no, wherever the site honours them."""
    privacy_signal_at: datetime | None
    analytics: bool | None = None
    """Analytics consent (the site's consent_mode): true granted, false refused, null never answered."""
    analytics_source: Literal["tracker", "api"] | None = None
    analytics_changed_at: datetime | None = None

    @classmethod
    def of(cls, visitor_id: UUID, consent: VisitorConsent | None) -> VisitorConsentPublic:
        if consent is None:
            return cls(visitor_id, None, None, None, None, None)
        return cls(
            visitor_id=visitor_id,
            ads=consent.ads,
            source=cast(Any, consent.source),
            changed_at=consent.changed_at,
            privacy_signal=cast(Any, consent.privacy_signal),
            privacy_signal_at=consent.privacy_signal_at,
            analytics=consent.analytics,
            analytics_source=cast(Any, consent.analytics_source),
            analytics_changed_at=consent.analytics_changed_at,
        )
