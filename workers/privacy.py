"""Privacy tasks: erasing a person (enqueued by a confirmed erasure) and beat's retention run."""

from __future__ import annotations

from uuid import UUID

from celery import Task
from sqlmodel import Session

from tenants.isolation import current_tenant_id, tenant_session
from tenants.privacy.erase import ERASE_TASK, erase_person, record_failure
from tenants.privacy.retention import FORGET_AFTER_INGEST_TASK, expire_all_tenants, forget_after_ingest
from workers.app import celery_app
from workers.base import TRANSIENT_ERRORS, tenant_task

__all__ = ["erase", "expire_retention", "forget_browser_after_ingest"]


@tenant_task(name=ERASE_TASK)
def erase(session: Session, erasure_id: str) -> str | None:
    """Idempotent: a re-delivered task finds the erasure done and does nothing. An error that no retry cures is
    recorded on the erasure, so its status says so instead of staying queued."""
    try:
        erasure = erase_person(session, UUID(erasure_id))
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:
        session.rollback()
        record_failure(current_tenant_id(session), UUID(erasure_id), error)
        raise
    return erasure.status.value if erasure else None


FORGET_RETRY_SECONDS = 2
FORGET_MAX_WAITS = 900
"""About half an hour of ingest backlog waited for; then what is stored is forgotten (a backlog that long is
one of the README's alerts)."""


@celery_app.task(
    name=FORGET_AFTER_INGEST_TASK,
    bind=True,
    acks_late=True,
    max_retries=FORGET_MAX_WAITS,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=300,
    retry_jitter=True,
)
def forget_browser_after_ingest(self: Task, tenant_id: str, visitor_id: str) -> bool:
    """Idempotent: forgetting a forgotten browser deletes nothing more. While the browser's hits from before its
    withdrawal still wait in the ingest stream it asks again in a moment, holding no worker meanwhile."""
    with tenant_session(UUID(tenant_id)) as session:
        forgotten = forget_after_ingest(
            session, UUID(visitor_id), waited_enough=self.request.retries >= FORGET_MAX_WAITS
        )
    if forgotten is None:
        raise self.retry(countdown=FORGET_RETRY_SECONDS)
    return forgotten


@celery_app.task(name="trailmark.privacy.expire_retention", ignore_result=True, max_retries=0)
def expire_retention() -> dict[str, int]:
    """Beat sends this every hour; each tenant's expired visitors and visits go in short batches. A run that
    fails leaves the rest for the next one."""
    result = expire_all_tenants()
    return {"visitors": result.visitors, "visits": result.visits}
