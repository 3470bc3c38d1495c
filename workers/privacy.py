"""Privacy tasks: erasing a person (enqueued by a confirmed erasure) and beat's retention run."""

from __future__ import annotations

from uuid import UUID

from sqlmodel import Session

from tenants.isolation import current_tenant_id
from tenants.privacy.erase import ERASE_TASK, erase_person, record_failure
from tenants.privacy.retention import expire_all_tenants
from workers.app import celery_app
from workers.base import TRANSIENT_ERRORS, tenant_task

__all__ = ["erase", "expire_retention"]


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


@celery_app.task(name="trailmark.privacy.expire_retention", ignore_result=True, max_retries=0)
def expire_retention() -> dict[str, int]:
    """Beat sends this every hour; each tenant's expired visitors and visits go in short batches. A run that
    fails leaves the rest for the next one."""
    result = expire_all_tenants()
    return {"visitors": result.visitors, "visits": result.visits}
