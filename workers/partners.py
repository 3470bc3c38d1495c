"""Partner-program tasks: commissions follow every recorded purchase and refund (``workers.purchases`` calls
``tenants.partners.commissions``), and beat approves the commissions whose hold ended."""

from __future__ import annotations

from tenants.isolation import tenant_session
from tenants.partners.commissions import approve_due_commissions
from tenants.reports.rollups import report_tenants
from workers.app import celery_app

__all__ = ["APPROVE_DUE_TASK", "approve_due"]

APPROVE_DUE_TASK = "trailmark.partners.approve_due"


@celery_app.task(name=APPROVE_DUE_TASK, ignore_result=True, max_retries=0)
def approve_due() -> int:
    """Periodic (beat): approve every tenant's pending commissions whose hold ended, one transaction per tenant.
    Runs overlap safely: an approved commission is no longer pending."""
    approved = 0
    for tenant_id in report_tenants():
        with tenant_session(tenant_id) as session:
            approved += approve_due_commissions(session)
    return approved
