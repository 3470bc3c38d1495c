"""How long a tenant keeps browsing data, and the job that deletes what expired.

Anonymous visitors (never identified) and all their visits go ``anonymous_visitor_months`` after their last
activity; identified contacts' visits go ``identified_visit_months`` after they happened, or never (until the
person is erased). The job works in small batches, each its own short transaction that skips rows another
transaction holds (``SKIP LOCKED``), so ingest, which updates visitors as it stores visits, never waits on it
for long. Rollups keep their counts: they hold no personal data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import text
from sqlmodel import Session

from tenants.errors import Invalid
from tenants.isolation import current_tenant_id, system_session, tenant_session
from tenants.models import PrivacySettings, VisitorConsent, utcnow
from tenants.privacy.catalog import person_tables
from tenants.privacy.erase import KEPT, deletion_order, keep_rollups
from tenants.privacy.person import bound, person_statement
from tenants.redis_store import REDIS_UNAVAILABLE, get_ingest_redis
from tenants.settings import get_settings
from tenants.tracking.buffer import holds_entries_until
from tenants.tracking.cookieless import COUNTED_HITS_KEPT_DAYS

__all__ = [
    "DEFAULT_ANONYMOUS_MONTHS",
    "FORGET_AFTER_INGEST_TASK",
    "ExpiryResult",
    "expire_all_tenants",
    "expire_tenant",
    "forget_after_ingest",
    "forget_anonymous_browser",
    "get_policy",
    "set_policy",
]

log = logging.getLogger("trailmark.retention")

DEFAULT_ANONYMOUS_MONTHS = 13
"""The CNIL's guidance for audience measurement: 13 months."""
VISITORS_PER_BATCH = 200
VISITS_PER_BATCH = 5000
MAX_ANONYMOUS_MONTHS = 120
MAX_IDENTIFIED_MONTHS = 600
FORGET_AFTER_INGEST_TASK = "trailmark.privacy.forget_after_ingest"


@dataclass(frozen=True)
class ExpiryResult:
    visitors: int
    visits: int


def get_policy(session: Session) -> PrivacySettings:
    """The tenant's policy; the defaults (not stored) until it sets one."""
    stored = session.get(PrivacySettings, current_tenant_id(session))
    return stored if stored is not None else PrivacySettings(anonymous_visitor_months=DEFAULT_ANONYMOUS_MONTHS)


def set_policy(
    session: Session, *, anonymous_visitor_months: int, identified_visit_months: int | None
) -> PrivacySettings:
    """Store the policy; the next expiry run applies it."""
    errors: dict[str, str] = {}
    if not 1 <= anonymous_visitor_months <= MAX_ANONYMOUS_MONTHS:
        errors["anonymous_visitor_months"] = f"must be 1 to {MAX_ANONYMOUS_MONTHS} months"
    if identified_visit_months is not None and not 1 <= identified_visit_months <= MAX_IDENTIFIED_MONTHS:
        errors["identified_visit_months"] = f"must be 1 to {MAX_IDENTIFIED_MONTHS} months, or empty to keep them"
    if errors:
        detail = "; ".join(f"{name.replace('_', ' ')} {problem}" for name, problem in errors.items())
        raise Invalid(f"the retention policy is out of range: {detail}", errors)
    policy = session.get(PrivacySettings, current_tenant_id(session)) or PrivacySettings()
    policy.anonymous_visitor_months = anonymous_visitor_months
    policy.identified_visit_months = identified_visit_months
    policy.updated_at = utcnow()
    session.add(policy)
    session.flush()
    return policy


# The visitors are locked (skipping any ingest holds) before their rows go, so a browser coming back at this
# moment either waits for this short transaction or is left for the next run.
_DOOMED_VISITORS = text(
    """SELECT id FROM visitors
       WHERE contact_id IS NULL AND last_seen_at < now() - make_interval(months => :months)
       ORDER BY last_seen_at LIMIT :batch FOR UPDATE SKIP LOCKED"""
)
_EXPIRE_IDENTIFIED = text(
    """WITH doomed AS (
           SELECT hit_id, occurred_at FROM visits
           WHERE contact_id IS NOT NULL AND occurred_at < now() - make_interval(months => :months)
           ORDER BY occurred_at LIMIT :batch)
       DELETE FROM visits v USING doomed d WHERE v.hit_id = d.hit_id AND v.occurred_at = d.occurred_at"""
)


def expire_tenant(tenant_id: UUID, *, batch: int = VISITORS_PER_BATCH, max_batches: int | None = None) -> ExpiryResult:
    """Delete what the tenant's policy says expired, batch by batch, and record the run."""
    with tenant_session(tenant_id) as session:
        policy = get_policy(session)
        anonymous_months, identified_months = policy.anonymous_visitor_months, policy.identified_visit_months
        # Every table that names browsers, from the catalog (visits, referral clicks, consents …), browsers last;
        # a row that also names a contact (a scanner's click on someone's link) is that contact's and stays.
        tables = deletion_order([t for t in person_tables(session) if t.visitor_columns and t.name not in KEPT])
    visitors = visits = batches = 0
    while max_batches is None or batches < max_batches:
        with tenant_session(tenant_id) as session:
            keep_rollups(session)
            doomed = list(session.execute(_DOOMED_VISITORS, {"months": anonymous_months, "batch": batch}).scalars())
            for table in tables if doomed else []:
                statement = person_statement(
                    "DELETE FROM", table.name, (), table.visitor_columns, claimed_by_no_contact=table.contact_columns
                )
                gone = int(session.execute(bound(statement), {"visitors": doomed}).rowcount or 0)  # type: ignore[attr-defined]
                visits += gone if table.name == "visits" else 0
        visitors, batches = visitors + len(doomed), batches + 1
        if len(doomed) < batch:
            break
    while identified_months is not None and (max_batches is None or batches < max_batches):
        with tenant_session(tenant_id) as session:
            gone = session.execute(
                _EXPIRE_IDENTIFIED, {"months": identified_months, "batch": VISITS_PER_BATCH}
            ).rowcount  # type: ignore[attr-defined]
        visits, batches = visits + gone, batches + 1
        if gone < VISITS_PER_BATCH:
            break
    with tenant_session(tenant_id) as session:
        # The ids of cookieless hits counted days ago: no entry that late is re-delivered (not personal data).
        session.execute(
            text(
                "DELETE FROM cookieless_counted_hits WHERE tenant_id = :tenant_id AND counted_on < current_date - :days"
            ),
            {"tenant_id": tenant_id, "days": COUNTED_HITS_KEPT_DAYS},
        )
        session.execute(
            text(
                """INSERT INTO privacy_settings (tenant_id, last_expired_at, last_expired_visitors, last_expired_visits)
                   VALUES (:tenant_id, now(), :visitors, :visits)
                   ON CONFLICT (tenant_id) DO UPDATE SET last_expired_at = excluded.last_expired_at,
                       last_expired_visitors = excluded.last_expired_visitors,
                       last_expired_visits = excluded.last_expired_visits"""
            ),
            {"tenant_id": tenant_id, "visitors": visitors, "visits": visits},
        )
    if visitors or visits:
        log.info("expired %d visitors and %d visits", visitors, visits, extra={"tenant_id": str(tenant_id)})
    return ExpiryResult(visitors, visits)


def forget_anonymous_browser(session: Session, visitor_id: UUID) -> bool:
    """The browser withdrew analytics consent: delete its visits and visitor row when it is anonymous (linked to
    no contact), as retention would, keeping its consent row (the record of the withdrawal) and the rollups.
    A browser linked to a contact keeps its history (the contact's, erasable as a person); False then."""
    linked = session.execute(
        text("SELECT contact_id IS NOT NULL FROM visitors WHERE id = :v"), {"v": visitor_id}
    ).scalar()
    if linked:
        return False
    keep_rollups(session)
    tables = deletion_order(
        [t for t in person_tables(session) if t.visitor_columns and t.name not in KEPT and t.name != "visitor_consents"]
    )
    for table in tables:
        statement = person_statement(
            "DELETE FROM", table.name, (), table.visitor_columns, claimed_by_no_contact=table.contact_columns
        )
        session.execute(bound(statement), {"visitors": [visitor_id]})
    return True


def forget_after_ingest(session: Session, visitor_id: UUID, *, waited_enough: bool = False) -> bool | None:
    """Forget a browser that withdrew analytics consent once more, after the hits it sent before withdrawing
    have left the ingest stream: those still waiting when the withdrawal deleted its history are stored after
    it, and would bring part of that history back. None while such hits still wait (unless ``waited_enough``:
    then it forgets what is stored so far). Nothing when it has consented again since (its new history is
    wanted) or is linked to a contact; returns whether it was forgotten."""
    consent = session.get(VisitorConsent, (current_tenant_id(session), visitor_id))
    if consent is None or consent.analytics is not False or consent.analytics_changed_at is None:
        return False
    withdrawn_ms = int(consent.analytics_changed_at.timestamp() * 1000)
    try:
        waiting = holds_entries_until(get_ingest_redis(), withdrawn_ms, shard_count=get_settings().ingest_shards)
        if waiting and not waited_enough:
            return None
    except REDIS_UNAVAILABLE as error:
        log.warning("the ingest stream cannot be read (%s): forgetting with the visits stored so far", error)
    return forget_anonymous_browser(session, visitor_id)


def expire_all_tenants() -> ExpiryResult:
    """Beat's run over every tenant (their ids from the owner-run ``trailmark_report_tenants``)."""
    with system_session() as session:
        tenants = [row[0] for row in session.execute(text("SELECT trailmark_report_tenants()"))]
    visitors = visits = 0
    for tenant_id in tenants:
        result = expire_tenant(tenant_id)
        visitors, visits = visitors + result.visitors, visits + result.visits
    return ExpiryResult(visitors, visits)
