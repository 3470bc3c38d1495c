"""Conversion tasks (the ``conversions`` queue): recording what converted, once its hook's transaction committed;
sending due conversions and retractions (thin wrappers over ``tenants.conversions``)."""

from __future__ import annotations

import logging
from uuid import UUID

from sqlmodel import Session

from tenants.conversions.delivery import back_off_destination, due_destinations, send_due
from tenants.conversions.retractions import RETRACT_TASK, due_retraction_destinations, send_due_retractions
from tenants.conversions.service import FLUSH_TASK, RECORD_TASK, record
from tenants.isolation import tenant_session
from tenants.models import ConversionKind
from workers.app import celery_app
from workers.base import tenant_task

__all__ = ["flush_conversions", "record_conversion", "retract_conversions"]

log = logging.getLogger(__name__)


@tenant_task(name=RECORD_TASK)
def record_conversion(session: Session, kind: str, subject_id: str) -> str | None:
    """Idempotent: a conversion already recorded for this subject records nothing more."""
    conversion = record(session, ConversionKind(kind), subject_id)
    return str(conversion.id) if conversion else None


@tenant_task(name=RETRACT_TASK)
def retract_conversions(session: Session, integration_id: str) -> int:
    """An erase's nudge: send the destination's due retractions now rather than at beat's next flush.
    Idempotent: a redelivered nudge finds them retracted (or locked by the flush) and sends nothing."""
    return send_due_retractions(session, UUID(integration_id)).sent


def _back_off(tenant_id: UUID, integration_id: UUID, error: Exception) -> None:
    """A destination whose sender raised waits its back-off, instead of raising again on every flush."""
    try:
        back_off_destination(tenant_id, integration_id, f"the sender failed: {type(error).__name__}")
    except Exception:
        log.exception("cannot back off the destination", extra={"integration": str(integration_id)})


@celery_app.task(name=FLUSH_TASK, ignore_result=True, max_retries=0, acks_late=True)
def flush_conversions() -> int:
    """Periodic (beat, every second): send every destination's due batches, conversions first, then the
    retractions of erased people's conversions; a destination with more than a batch waiting is sent again
    at once; a destination whose sender raises is backed off, and the others go on. Flushes overlap safely:
    each batch of deliveries is claimed by one sender (SKIP LOCKED, then a lease), and each destination's
    retractions have one sender at a time."""
    sent = 0
    for tenant_id, integration_id in due_destinations():
        for _ in range(100):  # bounded: a flush ends, and the next one carries on
            try:
                result = send_due(UUID(str(tenant_id)), UUID(str(integration_id)))
            except Exception as error:  # one broken destination must not block the ones ordered after it
                log.exception("conversion destination failed", extra={"integration": str(integration_id)})
                _back_off(UUID(str(tenant_id)), UUID(str(integration_id)), error)
                break
            sent += result.sent
            if not result.full or result.paused or result.retrying:
                break
    for tenant_id, integration_id in due_retraction_destinations():
        for _ in range(100):
            try:
                with tenant_session(UUID(str(tenant_id))) as session:
                    result = send_due_retractions(session, UUID(str(integration_id)))
            except Exception:
                log.exception("retraction destination failed", extra={"integration": str(integration_id)})
                break
            if not result.full or result.paused or result.retrying:
                break
    return sent
