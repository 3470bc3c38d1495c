"""Builders for the privacy tests: a person with a full history in every area (devices with visits, a form, a
tracked link's click, a membership with a live session, a partner's referral, a purchase with its commission),
and what the catalog says of where such a person's data can be."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from uuid import UUID, uuid4

import psycopg
from sqlmodel import Session

from tenants.contacts.service import ContactChanges, create_field, upsert_by_email
from tenants.identity.service import link_visitor, merge_visitor_history
from tenants.isolation import current_tenant_id, tenant_session
from tenants.links.service import create_link
from tenants.memberships.service import create_member, create_membership_site
from tenants.memberships.sessions import create_session
from tenants.models import (
    CodeKind,
    Evidence,
    FormSubmission,
    LinkClick,
    PartnerStatus,
    PurchaseSource,
    StripeEvent,
    new_id,
    utcnow,
)
from tenants.partners import commissions
from tenants.partners import service as partners
from tenants.purchases.service import Buyer, Item, Order, record_purchase
from tenants.tracking.hits import ClickIds, Envelope, Hit, Utm
from tenants.tracking.ingest import store_envelopes
from tenants.tracking.sites import create_site

__all__ = ["Person", "build_person", "rollups", "rows_with_uuids", "text_matches"]


@dataclass
class Person:
    email: str
    first_name: str
    last_name: str
    phone: str
    contact_id: UUID = field(default_factory=uuid4)
    visitor_ids: list[UUID] = field(default_factory=list)
    member_id: UUID | None = None
    session_id: str | None = None
    purchase_id: UUID | None = None

    @property
    def terms(self) -> list[str]:
        """What must not be found anywhere once the person is erased."""
        return [self.email, self.first_name, self.last_name, self.phone, *(str(v) for v in self.visitor_ids)]


def _visits(session: Session, site_id: UUID, visitor_id: UUID, count: int, **hit: object) -> None:
    now = int(time.time() * 1000)
    hits = [
        Hit(hit_id=uuid4(), ts=now - i * 1000, url=f"https://shop.example/p/{i}?ref=x", path=f"/p/{i}", **hit)  # type: ignore[arg-type]
        for i in range(count)
    ]
    store_envelopes(
        session,
        [Envelope(current_tenant_id(session), site_id, visitor_id, now, hits, user_agent="Mozilla/5.0 Privacy")],
    )


def build_person(
    tenant_id: UUID,
    *,
    first_name: str,
    last_name: str,
    devices: int = 3,
    referred_by_partner: bool = True,
    member: bool = True,
) -> Person:
    """A person as Trailmark comes to know one: anonymous devices that browse (one arriving on a partner's
    link, with an ad click id), a form filled in, a tracked email link clicked, a membership with a live
    session, and a purchase that earns the partner a commission."""
    tag = uuid4().hex[:8]
    person = Person(
        email=f"{first_name.lower()}.{tag}@example.com",
        first_name=first_name,
        last_name=f"{last_name}{tag}",
        phone=f"+1555{int(tag, 16) % 10_000_000:07d}",
    )
    with tenant_session(tenant_id) as session:
        site = create_site(session, name=f"Shop {tag}", allowed_origins=["https://shop.example"])
        code = None
        if referred_by_partner:
            program = partners.create_program(
                session,
                partners.ProgramSettings(
                    name=f"Friends {tag}", landing_url="https://shop.example/", currency="USD", hold_days=0
                ),
            )
            partners.set_product(session, program.id, f"course-{tag}", partners.CommissionRate("percent", 2000), None)
            partner = partners.create_partner(
                session, program_id=program.id, email=f"partner-{tag}@example.com", status=PartnerStatus.APPROVED
            )
            code = partners.create_code(session, partner_id=partner.id, code=f"friend-{tag}", kind=CodeKind.LINK)
        field_key = f"plan_{tag}"
        create_field(session, key=field_key, label="Plan", type="text", sensitive=True)
        person.visitor_ids = [new_id() for _ in range(devices)]
        for index, visitor_id in enumerate(person.visitor_ids):
            extra: dict[str, object] = {"utm": Utm(source="newsletter", medium="email", campaign=f"spring-{tag}")}
            if index == 0:
                extra["click_ids"] = ClickIds(gclid=f"gclid-{tag}")
            if index == 1 and code is not None:
                extra["partner_code"] = code.code
            _visits(session, site.id, visitor_id, 3, **extra)
        contact, created = upsert_by_email(
            session,
            ContactChanges(
                email=person.email,
                first_name=person.first_name,
                last_name=person.last_name,
                phone=person.phone,
                custom={field_key: f"gold for {person.first_name}"},
            ),
        )
        person.contact_id = contact.id
        for index, visitor_id in enumerate(person.visitor_ids):
            link_visitor(
                session,
                visitor_id=visitor_id,
                contact_id=contact.id,
                evidence=Evidence.FORM,
                site_id=site.id,
                new_contact=created and index == 1,
            )
        for visitor_id in person.visitor_ids:
            merge_visitor_history(session, visitor_id, contact.id)
        from tenants.forms.service import create_form

        form = create_form(
            session, site_id=site.id, name=f"Newsletter {tag}", fields=[{"name": "email", "maps_to": "email"}]
        )
        session.add(
            FormSubmission(
                form_id=form.id,
                contact_id=contact.id,
                visitor_id=person.visitor_ids[0],
                data={"email": person.email, "first_name": person.first_name, "note": f"call {person.phone}"},
                page_url=f"https://shop.example/join?email={person.email}",
            )
        )
        link = create_link(session, contact_id=contact.id, target_url="https://shop.example/offer")
        session.flush()
        session.add(
            LinkClick(
                link_id=link.id,
                contact_id=contact.id,
                visitor_id=person.visitor_ids[2 % devices],
                identifies=True,
                user_agent="Mozilla/5.0 Privacy",
            )
        )
        if member:
            club = create_membership_site(session, name=f"Club {tag}", registration="open")
            person.member_id = create_member(session, site_id=club.id, email=person.email).id
            club_id = club.id
        purchase = record_purchase(
            session,
            Order(
                source=PurchaseSource.API,
                external_id=f"order-{tag}",
                amount=9900,
                currency="USD",
                buyer=Buyer(contact_id=contact.id),
                items=[Item(f"course-{tag}", 1, 9900)],
            ),
        ).purchase
        person.purchase_id = purchase.id
        # What Stripe's webhook stores for a checkout: the buyer's details in the event's payload.
        session.add(
            StripeEvent(
                id=f"evt_{tag}",
                type="checkout.session.completed",
                payload={
                    "id": f"evt_{tag}",
                    "data": {
                        "object": {
                            "customer_details": {
                                "email": person.email,
                                "name": f"{person.first_name} {person.last_name}",
                                "phone": person.phone,
                            }
                        }
                    },
                },
                processed_at=utcnow(),
                outcome="recorded",
            )
        )
        if referred_by_partner:
            commissions.record_commissions(session, purchase.id)
    if member and person.member_id is not None:
        person.session_id = create_session(
            tenant_id, person.member_id, person.contact_id, club_id, person.visitor_ids[0]
        ).session_id
    return person


def _tables(connection: psycopg.Connection[tuple[object, ...]], types: tuple[str, ...]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    rows = connection.execute(
        """SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             AND a.attnum > 0 AND NOT a.attisdropped
             AND EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.oid AND t.attname = 'tenant_id')
             AND format_type(a.atttypid, NULL) = ANY(%s)
           ORDER BY 1, 2""",
        (list(types),),
    ).fetchall()
    for table, column in rows:
        found.setdefault(str(table), []).append(str(column))
    return found


def rows_with_uuids(owner_url: str, tenant_id: UUID, ids: list[UUID]) -> dict[str, int]:
    """Tables (from the catalog, every uuid column of every tenant table) with rows that hold one of ``ids``."""
    counts: dict[str, int] = {}
    with psycopg.connect(owner_url) as connection:
        for table, columns in _tables(connection, ("uuid",)).items():
            tests = " OR ".join(f'"{c}" = ANY(%(ids)s)' for c in columns if c != "tenant_id")
            if not tests:
                continue
            (count,) = connection.execute(  # type: ignore[misc]
                f'SELECT count(*) FROM "{table}" WHERE tenant_id = %(tenant)s AND ({tests})',
                {"ids": ids, "tenant": tenant_id},
            ).fetchone()
            if count:
                counts[table] = int(count)
    return counts


TEXT_TYPES = ("text", "character varying", "jsonb", "json", "inet", "text[]", "character varying[]")


def text_matches(owner_url: str, tenant_id: UUID, terms: list[str]) -> dict[str, list[str]]:
    """Where any of ``terms`` appears (case-blind) among the tenant's rows in any text, JSON or address column of
    any tenant table, as ``table.column`` → the terms found there."""
    found: dict[str, list[str]] = {}
    with psycopg.connect(owner_url) as connection:
        for table, columns in _tables(connection, TEXT_TYPES).items():
            key = "id" if table == "tenants" else "tenant_id"
            for column in columns:
                for term in terms:
                    (hit,) = connection.execute(  # type: ignore[misc]
                        f'SELECT EXISTS (SELECT 1 FROM "{table}" WHERE {key} = %s AND "{column}"::text ILIKE %s)',
                        (tenant_id, f"%{term}%"),
                    ).fetchone()
                    if hit:
                        found.setdefault(f"{table}.{column}", []).append(term)
    return found


def rollups(owner_url: str, tenant_id: UUID) -> dict[str, list[tuple[object, ...]]]:
    """Every rollup table's rows of the tenant (from the catalog: tables named ``…_rollups``), sorted."""
    with psycopg.connect(owner_url) as connection:
        tables = [
            str(name)
            for (name,) in connection.execute(
                """SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')
                   AND NOT relispartition AND relname LIKE '%%\\_rollups' ORDER BY 1"""
            ).fetchall()
        ]
        return {
            table: sorted(
                connection.execute(f'SELECT * FROM "{table}" WHERE tenant_id = %s', (tenant_id,)).fetchall(),
                key=repr,
            )
            for table in tables
        }
