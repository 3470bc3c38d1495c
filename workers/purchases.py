"""Purchase tasks: draining stored Stripe events (whose purchases get their commissions in the drain's own
transaction), and the hooks that follow every other recorded purchase and refund (the REST API's, enqueued
through the outbox by ``tenants.purchases.service``): a purchase's commissions are computed, and refunds take
them back, by ``tenants.partners.commissions``."""

from __future__ import annotations

import logging
from uuid import UUID

from sqlmodel import Session

from tenants.isolation import current_tenant_id
from tenants.models import Purchase
from tenants.partners.commissions import apply_refunds, record_commissions
from tenants.purchases.service import RECORDED_TASK, REFUNDED_TASK
from tenants.purchases.stripe_webhooks import (
    DRAIN_ALL_TASK,
    DRAIN_TASK,
    PROCESS_TASK,
    drain_events,
    pending_tenants,
    process_event,
)
from workers.app import celery_app
from workers.base import TRANSIENT_ERRORS, tenant_task

__all__ = [
    "drain_all_stripe_events",
    "drain_stripe_events",
    "process_stripe_event",
    "purchase_recorded",
    "purchase_refunded",
]

log = logging.getLogger(__name__)


@tenant_task(name=PROCESS_TASK)
def process_stripe_event(session: Session, event_id: str) -> str | None:
    """Idempotent: an event already processed answers its stored outcome and changes nothing."""
    return process_event(session, event_id)


@celery_app.task(
    name=DRAIN_TASK,
    ignore_result=True,
    acks_late=True,
    autoretry_for=TRANSIENT_ERRORS,
    max_retries=8,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
)
def drain_stripe_events(tenant_id: str) -> int:
    """The API's nudge: process the tenant's pending events, a transaction per batch (not one for all, so
    not ``tenant_task``)."""
    return drain_events(UUID(tenant_id))


@celery_app.task(name=DRAIN_ALL_TASK, ignore_result=True, max_retries=0)
def drain_all_stripe_events() -> int:
    """Periodic (beat, every second): drain every tenant with pending events, so an event whose nudge was lost
    waits a second at most. Runs overlap safely (SKIP LOCKED)."""
    return sum(drain_events(tenant_id) for tenant_id in pending_tenants())


@tenant_task(name=RECORDED_TASK)
def purchase_recorded(session: Session, purchase_id: str) -> None:
    """A purchase was stored: credit it and store its commissions (a redelivery inserts nothing again)."""
    purchase = session.get(Purchase, (current_tenant_id(session), UUID(purchase_id)))
    if purchase is not None:
        created = record_commissions(session, purchase.id)
        log.debug("purchase %s recorded: %s commission(s)", purchase.id, len(created))


@tenant_task(name=REFUNDED_TASK)
def purchase_refunded(session: Session, purchase_id: str) -> None:
    """A purchase's refunded amount changed: its commissions follow the new total (idempotent per total)."""
    purchase = session.get(Purchase, (current_tenant_id(session), UUID(purchase_id)))
    if purchase is not None:
        apply_refunds(session, purchase.id)
        log.debug("purchase %s refunded: %s of %s", purchase.id, purchase.refunded_amount, purchase.amount)
