"""Builders for the partner program: a tenant's program with approved partners and their codes, and a browser
that arrives through a partner's link (a real hit through collect and ingest)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import text

from tenants.isolation import tenant_session
from tenants.models import CodeKind, PartnerStatus
from tenants.partners import service as partners
from tests.conftest import SiteHandle, TenantHandle, make_site, token_after, wait_until

__all__ = [
    "ORIGIN",
    "PASSWORD",
    "PartnerHandle",
    "ProgramHandle",
    "arrive_through",
    "give_password",
    "make_program",
    "portal_login",
    "referral_clicks",
]

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"


@dataclass
class PartnerHandle:
    id: UUID
    contact_id: UUID
    email: str
    link_code: str
    promo_code: str


@dataclass
class ProgramHandle:
    tenant: TenantHandle
    site: SiteHandle
    program_id: UUID
    partners: dict[str, PartnerHandle]


def make_program(tenant: TenantHandle, *names: str, **terms: Any) -> ProgramHandle:
    """A site, a program (first referrer, 30-day window unless ``terms`` say otherwise) and an approved partner per
    name, each with a link code ``<name>-link`` and a promo code ``<name>-promo``."""
    site = make_site(tenant, [ORIGIN])
    with tenant_session(tenant.tenant_id) as session:
        program = partners.create_program(
            session,
            partners.ProgramSettings(name="Friends", landing_url=f"{ORIGIN}/", currency="EUR", **terms),
        )
        handles = {}
        for name in names:
            email = f"{name}@partners.example"
            partner = partners.create_partner(
                session, program_id=program.id, email=email, first_name=name.title(), status=PartnerStatus.APPROVED
            )
            link = partners.create_code(session, partner_id=partner.id, code=f"{name}-link", kind=CodeKind.LINK)
            promo = partners.create_code(session, partner_id=partner.id, code=f"{name}-promo", kind=CodeKind.PROMO)
            handles[name] = PartnerHandle(partner.id, partner.contact_id, email, link.code, promo.code)
        return ProgramHandle(tenant, site, program.id, handles)


def hit(path: str, **fields: Any) -> dict[str, Any]:
    return {"hit_id": str(uuid.uuid4()), "ts": int(time.time() * 1000), "url": f"{ORIGIN}{path}", "path": "/", **fields}


def collect(client: Any, site: SiteHandle, *hits: dict[str, Any], token: str | None = None) -> Any:
    return client.post(
        f"/collect/{site.site_key}",
        content=json.dumps({"v": 1, "token": token, "hits": list(hits)}).encode(),
        headers={"Origin": ORIGIN, "User-Agent": BROWSER, "Content-Type": "text/plain;charset=UTF-8"},
    )


def referral_clicks(tenant: TenantHandle, **where: Any) -> list[dict[str, Any]]:
    condition = " AND ".join(f"{name} = :{name}" for name in where) or "true"
    with tenant_session(tenant.tenant_id) as session:
        rows = session.execute(text(f"SELECT * FROM referral_clicks WHERE {condition}"), where)
        return [dict(row._mapping) for row in rows]


def arrive_through(
    client: Any, program: ProgramHandle, code: str, *, sid: str | None = None, token: str | None = None
) -> str:
    """A browser lands on ``?ref=code`` (the tracker sends the code and SubID); waits until ingest recorded the
    referral click. Returns the browser's visitor token."""
    query = f"?ref={code}" + (f"&sid={sid}" if sid else "")
    landing = hit(f"/{query}", partner_code=code, **({"partner_sid": sid} if sid else {}))
    token = token_after(collect(client, program.site, landing, token=token), token)
    wait_until(lambda: referral_clicks(program.tenant, hit_id=landing["hit_id"]), 60, f"the click on {code} recorded")
    return token


PASSWORD = "correct horse battery"


def give_password(tenant: TenantHandle, partner_id: UUID, password: str = PASSWORD) -> None:
    """The portal account a partner has once it followed its mailed link and chose ``password``."""
    from tenants.models import PartnerAccount, utcnow
    from tenants.security.passwords import hash_password

    with tenant_session(tenant.tenant_id) as session:
        now = utcnow()
        session.add(
            PartnerAccount(
                partner_id=partner_id,
                password_hash=hash_password(password),
                password_changed_at=now,
                email_verified_at=now,
            )
        )


def portal_login(client: Any, tenant_slug: str, email: str, password: str = PASSWORD) -> Any:
    """Log in at the tenant's portal through its form (the client keeps the cookies); returns the answer."""
    from tests.support.dashboard import csrf_of

    token = csrf_of(client.get(f"/p/{tenant_slug}/login").text)
    return client.post(
        f"/p/{tenant_slug}/login",
        data={"csrf": token, "email": email, "password": password},
        follow_redirects=False,
    )
