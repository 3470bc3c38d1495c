"""Conversion tasks (the ``conversions`` queue): recording what converted, once its hook's transaction committed
(thin wrappers over ``tenants.conversions.service``)."""

from __future__ import annotations

from sqlmodel import Session

from tenants.conversions.service import RECORD_TASK, record
from tenants.models import ConversionKind
from workers.base import tenant_task

__all__ = ["record_conversion"]


@tenant_task(name=RECORD_TASK)
def record_conversion(session: Session, kind: str, subject_id: str) -> str | None:
    """Idempotent: a conversion already recorded for this subject records nothing more."""
    conversion = record(session, ConversionKind(kind), subject_id)
    return str(conversion.id) if conversion else None
