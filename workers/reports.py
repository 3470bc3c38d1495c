"""Report tasks: the nightly check that the rollups equal a scan of the visits and contacts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tenants.reports.rollups import check_all_tenants
from workers.app import celery_app

__all__ = ["check_rollups"]


@celery_app.task(name="trailmark.reports.check_rollups", ignore_result=True, max_retries=0)
def check_rollups(day: str | None = None) -> int:
    """Beat sends this each night for yesterday (UTC); ``day`` (ISO) checks another. Differences are logged
    as warnings with tenant and counts; ``trailmark reports rebuild`` repairs them."""
    checked = date.fromisoformat(day) if day else datetime.now(UTC).date() - timedelta(days=1)
    return check_all_tenants(checked)
