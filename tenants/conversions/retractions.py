"""Withdrawing an erased person's conversions from the ad platforms that allow it: Google Ads, by a RETRACTION
conversion adjustment (``customers/{id}:uploadConversionAdjustments``). Meta, TikTok and LinkedIn have no such API.

The erase (one transaction) writes a :class:`ConversionRetraction` per conversion Google received and lists it
in the erase report as not retracted yet; from then on a retraction is delivered like a conversion: the
``conversions`` queue, one sender per destination at a time (the same advisory lock as deliveries, so a
retraction never overtakes its upload), batches, retries with backoff and Retry-After, a pause on an
authentication error until the tenant reconnects. Each outcome is written into the erase report in the same
transaction, so the status endpoint always says where each retraction stands.

A retraction names the conversion by its order id (our deterministic event id) alone: Google refuses an
adjustment that sets both an order id and a gclid pair (GCLID_DATE_TIME_PAIR_AND_ORDER_ID_BOTH_SET), and one
uploaded with an order id is found by it. So no click id of the person is kept; the order id itself is cleared
once the retraction is done or has failed for good.

Google's own limits: a conversion is adjusted once it is 24 hours old (TOO_RECENT_CONVERSION) and no later than
54 days after it (CONVERSION_EXPIRED); not at all when it was uploaded with a wbraid. Google finds the
conversion by its action too: the retraction names the action the conversion was uploaded under (kept on its
delivery when it was sent), even when the tenant has mapped its kind to another action since.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlmodel import Session, col, select

from tenants.conversions import payloads, platforms
from tenants.conversions.delivery import (
    MAX_ATTEMPTS,
    SendResult,
    backoff_seconds,
    lock_destination,
    send_with_token,
)
from tenants.conversions.integrations import pause_integration
from tenants.conversions.service import QUEUE
from tenants.isolation import current_tenant_id, system_session
from tenants.models import (
    Conversion,
    ConversionRetraction,
    Erasure,
    Integration,
    IntegrationStatus,
    Platform,
    RetractionStatus,
    utcnow,
)
from tenants.outbox import service as outbox

__all__ = [
    "ADJUSTMENT_WINDOW",
    "BATCH_LIMIT",
    "OLD_ENOUGH",
    "RETRACT_TASK",
    "abandon_retractions",
    "adjustment",
    "due_retraction_destinations",
    "enqueue_sends",
    "queue_retraction",
    "send_due_retractions",
    "state_of",
]

log = logging.getLogger("trailmark.conversions")

RETRACT_TASK = "trailmark.conversions.retract"
ADJUSTMENT_WINDOW = timedelta(days=54)
"""Google adjusts a conversion up to 54 days after it happened (CONVERSION_EXPIRED after)."""
OLD_ENOUGH = timedelta(hours=24, minutes=5)
"""Google adjusts a conversion once it is 24 hours old (TOO_RECENT_CONVERSION before); a margin for clocks."""
BATCH_LIMIT = 2000
"""Adjustments per request (TOO_MANY_ADJUSTMENTS_IN_REQUEST above)."""


def queue_retraction(
    session: Session,
    erasure_id: UUID,
    integration: Integration,
    conversion: Conversion,
    uploaded_action: str | None = None,
) -> ConversionRetraction | str:
    """The retraction of ``conversion``, which ``integration`` received under ``uploaded_action`` (its delivery's
    ``conversion_action``), added to the session; or why it cannot be withdrawn there. Without a stored action
    (sent before it was kept), the action the integration maps the conversion to now."""
    platform = Platform(integration.platform)
    if platform != Platform.GOOGLE_ADS:
        return f"{platform} has no API to withdraw an event it received"
    if payloads.google_click_id(conversion) == "wbraid":
        return "Google Ads cannot adjust a conversion uploaded with a wbraid (only with a gclid or gbraid)"
    action = uploaded_action or payloads.google_conversion_action(conversion, integration)
    if action is None:
        return "the integration no longer has a conversion action for it, and Google finds a conversion by its action"
    now = utcnow()
    converted_at = payloads.google_conversion_time(conversion)
    if now - converted_at > ADJUSTMENT_WINDOW:
        return f"Google Ads adjusts a conversion for {ADJUSTMENT_WINDOW.days} days only, and this one is older"
    old_enough = converted_at + OLD_ENOUGH
    retraction = ConversionRetraction(
        erasure_id=erasure_id,
        integration_id=integration.id,
        conversion_action=action,
        order_id=conversion.event_id,
        converted_at=converted_at,
        # Google refuses an adjustment dated before the conversion (ADJUSTMENT_PRECEDES_CONVERSION).
        adjusted_at=max(now, converted_at + timedelta(seconds=1)),
        next_attempt_at=max(now, old_enough),
        reason="Google Ads adjusts a conversion only once it is 24 hours old" if old_enough > now else None,
    )
    session.add(retraction)
    return retraction


def enqueue_sends(session: Session, retractions: list[ConversionRetraction]) -> None:
    """One send task per destination with a retraction due now, in the erase's transaction: it goes within
    seconds instead of at beat's next flush. Later ones (and retries) are beat's."""
    now = utcnow()
    for integration_id in sorted({r.integration_id for r in retractions if r.next_attempt_at <= now}):
        outbox.enqueue(session, RETRACT_TASK, str(integration_id), queue=QUEUE)


def adjustment(retraction: ConversionRetraction) -> dict[str, Any]:
    """The retraction as Google's ``conversionAdjustments[]`` takes it: the same on every attempt."""
    return {
        "conversionAction": retraction.conversion_action,
        "adjustmentType": "RETRACTION",
        "orderId": retraction.order_id,
        "adjustmentDateTime": payloads.google_time(retraction.adjusted_at),
    }


def state_of(retraction: ConversionRetraction, integration: Integration) -> dict[str, Any]:
    """What the erase report says of a retraction: retracted and when, or not (yet) and why."""
    if retraction.status == RetractionStatus.RETRACTED:
        assert retraction.retracted_at is not None
        return {"status": "retracted", "retracted_at": retraction.retracted_at.isoformat()}
    if retraction.status == RetractionStatus.FAILED:
        return {"status": "failed", "why": f"not retracted: {retraction.reason}"}
    if integration.status == IntegrationStatus.PAUSED:
        why = (
            f"not retracted yet: the integration is paused ({integration.paused_reason}); "
            "the retraction is sent once the tenant reconnects it"
        )
    elif retraction.reason:
        why = f"not retracted yet: {retraction.reason}; next attempt at {retraction.next_attempt_at.isoformat()}"
    else:
        why = "not retracted yet: queued, it is sent within seconds"
    return {"status": "pending", "why": why}


def _report_in(session: Session, retractions: list[ConversionRetraction], integration: Integration) -> None:
    """Write each retraction's state into its erase report: a retracted one moves from ``not_retracted`` to
    ``retracted``; the others have their status and reason brought up to date."""
    by_erasure: dict[UUID, list[ConversionRetraction]] = {}
    for retraction in retractions:
        by_erasure.setdefault(retraction.erasure_id, []).append(retraction)
    for erasure_id, theirs in sorted(by_erasure.items()):
        erasure = session.get(Erasure, (integration.tenant_id, erasure_id), with_for_update=True)
        if erasure is None or "conversions" not in erasure.report:
            continue
        conversions = dict(erasure.report["conversions"])
        waiting = [dict(e) for e in conversions.get("not_retracted", [])]
        retracted = list(conversions.get("retracted", []))
        states = {str(r.id): state_of(r, integration) for r in theirs}
        still_waiting = []
        for entry in waiting:
            state = states.get(entry.get("retraction_id", ""))
            if state is None:
                still_waiting.append(entry)
            elif state["status"] == "retracted":
                entry.pop("why", None)
                retracted.append(entry | state)
            else:
                still_waiting.append(entry | state)
        conversions.update(not_retracted=still_waiting, retracted=retracted)
        erasure.report = {**erasure.report, "conversions": conversions}  # a new value, so the JSONB is written
        session.add(erasure)


def abandon_retractions(session: Session, integration: Integration) -> None:
    """The integration is being deleted: its queued retractions can no longer be sent, and their erase reports
    say so (the rows go with the integration)."""
    queued = list(
        session.exec(
            select(ConversionRetraction)
            .where(
                ConversionRetraction.integration_id == integration.id,
                ConversionRetraction.status == RetractionStatus.QUEUED,
            )
            .with_for_update()
        )
    )
    for retraction in queued:
        _finish(retraction, RetractionStatus.FAILED, "the integration was deleted before Google Ads took it")
    if queued:
        session.flush()
        _report_in(session, queued, integration)
        session.flush()


def due_retraction_destinations(limit: int = 1000) -> list[tuple[UUID, UUID]]:
    """(tenant, integration) pairs with a retraction to send now, across tenants (ids only)."""
    with system_session() as session:
        rows = session.execute(
            text("SELECT tenant_id, integration_id FROM trailmark_due_retraction_destinations(:n)"), {"n": limit}
        ).all()
    return [(row[0], row[1]) for row in rows]


def send_due_retractions(session: Session, integration_id: UUID) -> SendResult:
    """Send one batch of the destination's due retractions and store every outcome, and the erase reports'
    view of them, in the session's transaction. ``sent`` counts the retracted ones."""
    result = SendResult()
    if not lock_destination(session, integration_id):
        return result
    integration = session.get(Integration, (current_tenant_id(session), integration_id))
    if integration is None or integration.status != IntegrationStatus.ACTIVE:
        return result
    due = list(
        session.exec(
            select(ConversionRetraction)
            .where(
                ConversionRetraction.integration_id == integration_id,
                ConversionRetraction.status == RetractionStatus.QUEUED,
                col(ConversionRetraction.next_attempt_at) <= utcnow(),
            )
            .order_by(col(ConversionRetraction.next_attempt_at), col(ConversionRetraction.id))
            .limit(BATCH_LIMIT)
            .with_for_update(skip_locked=True)
        )
    )
    result.taken, result.full = len(due), len(due) == BATCH_LIMIT
    if not due:
        return result
    ready = []
    for retraction in due:
        if utcnow() - retraction.converted_at > ADJUSTMENT_WINDOW:  # waited too long (a pause, retries)
            expired = f"Google Ads adjusts a conversion for {ADJUSTMENT_WINDOW.days} days only"
            _finish(retraction, RetractionStatus.FAILED, expired)
            result.failed += 1
        else:
            ready.append(retraction)
    if ready and (pause := send_with_token(integration, lambda tokens: _retract(integration, tokens, ready, result))):
        pause_integration(session, integration, pause)
        result.paused = True
    session.flush()
    _report_in(session, due, integration)
    session.flush()
    return result


def _retract(
    integration: Integration, tokens: dict[str, str], batch: list[ConversionRetraction], result: SendResult
) -> None:
    """One request for ``batch``; a whole-batch 4xx is split in halves until the bad adjustment stands alone."""
    started = time.monotonic()
    answer = platforms.retract(integration, tokens, [adjustment(r) for r in batch])
    result.requests += 1
    latency_ms = round((time.monotonic() - started) * 1000)
    if answer.whole is not None and answer.splittable and len(batch) > 1:
        middle = len(batch) // 2
        _retract(integration, tokens, batch[:middle], result)
        _retract(integration, tokens, batch[middle:], result)
        return
    outcomes = answer.per_event or (answer.whole,) * len(batch)
    for retraction, outcome in zip(batch, outcomes, strict=True):
        assert outcome is not None
        _apply(retraction, outcome, result)
        log.info(
            "conversion retraction %s",
            retraction.status,
            extra={
                "platform": integration.platform,
                "integration": str(integration.id),
                "status": str(retraction.status),
                "latency_ms": latency_ms,
                "attempt": retraction.attempts,
            },
        )


def _finish(retraction: ConversionRetraction, status: RetractionStatus, reason: str | None) -> None:
    retraction.status = status
    retraction.reason = reason
    retraction.order_id = None  # nothing more to name at Google: the link to the person's conversion goes
    if status == RetractionStatus.RETRACTED:
        retraction.retracted_at = utcnow()


def _apply(retraction: ConversionRetraction, outcome: platforms.EventOutcome, result: SendResult) -> None:
    retraction.attempts += 1
    retraction.last_attempt_at = now = utcnow()
    if outcome.status == "sent":
        _finish(retraction, RetractionStatus.RETRACTED, outcome.reason)
        result.sent += 1
    elif outcome.status == "retry" and retraction.attempts < MAX_ATTEMPTS:
        retraction.reason = outcome.reason
        delay = timedelta(seconds=backoff_seconds(retraction.attempts, outcome.retry_after))
        retraction.next_attempt_at = max(now + delay, _old_enough(retraction))
        result.retrying += 1
    else:
        reason = outcome.reason or "refused"
        if outcome.status == "retry":
            reason = f"gave up after {retraction.attempts} attempts: {reason}"
        _finish(retraction, RetractionStatus.FAILED, reason)
        result.failed += 1


def _old_enough(retraction: ConversionRetraction) -> datetime:
    return retraction.converted_at + OLD_ENOUGH
