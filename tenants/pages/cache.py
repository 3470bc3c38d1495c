"""Hosted pages cached per process for page views (see ``tenants.pages.serving``), misses included.

The service that changes a page drops its entry once the change is committed: before the commit, a
concurrent page view would load the old row and cache it again. Changes made in another process show
within :data:`PAGE_SECONDS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy import event
from sqlmodel import Session

from tenants.cache import TTLCache

if TYPE_CHECKING:
    from tenants.pages.serving import PageBundle

__all__ = ["PAGE_SECONDS", "forget_page_after_commit", "pages"]

PAGE_SECONDS = 5.0

pages: TTLCache[tuple[UUID, str], PageBundle | None] = TTLCache(PAGE_SECONDS)
"""(tenant, page slug) → what the page needs besides its viewer, or None for no such page."""


def forget_page_after_commit(session: Session, tenant_id: UUID, slug: str) -> None:
    """Drop this process's copy of the page (or of its absence) when ``session`` commits."""
    event.listen(session, "after_commit", lambda _: pages.forget((tenant_id, slug)), once=True)
