"""Enqueue work in the same transaction as the change that causes it; publish after commit.

A message is a row of ``outbox``. After the writing session commits, a background thread of the
process relays the tenant's pending rows to the task queue at once, so a slow or absent broker never
delays the request that wrote them; rows it could not publish stay and are relayed by the periodic
sweep. Publishing is at-least-once, so tasks are idempotent.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from sqlalchemy import event, text
from sqlmodel import Session, col, select

from tenants.isolation import TENANT_KEY, get_engine, tenant_session
from tenants.models import OutboxMessage

__all__ = ["Publisher", "enqueue", "publish_now", "relay_all", "relay_tenant", "set_publisher"]

log = logging.getLogger(__name__)

Publisher = Callable[[OutboxMessage], None]
"""Sends one message to the task queue, raising if it could not be handed over."""

_publisher: Publisher | None = None
_PENDING_KEY = "outbox_pending"
RELAY_BATCH = 100


def set_publisher(publisher: Publisher | None) -> None:
    """Installed by the process that can reach the queue (the worker package); None stops the
    immediate relay, leaving messages to the sweep."""
    global _publisher  # noqa: PLW0603 - one publisher per process
    _publisher = publisher


def enqueue(session: Session, task: str, *args: Any, queue: str = "default") -> OutboxMessage:
    """Add a task to the session's transaction. Arguments must be JSON (ids, not objects); the
    tenant id is prepended when the task is published."""
    message = OutboxMessage(task=task, args=list(args), queue=queue)
    session.add(message)
    session.info[_PENDING_KEY] = True
    return message


def publish_now(tenant_id: UUID, task: str, *args: Any, queue: str = "default") -> bool:
    """Publish a task at once, with no row: for a nudge whose loss costs only delay (a periodic task does the
    same work). False when this process has no publisher or the broker refused it."""
    if _publisher is None:
        return False
    try:
        _publisher(OutboxMessage(tenant_id=tenant_id, task=task, args=list(args), queue=queue))
    except Exception as error:
        log.warning("publishing %s failed; the periodic run will do it: %s", task, error)
        return False
    return True


class _BackgroundRelay:
    """One daemon thread per process that relays tenants whose transactions just committed."""

    def __init__(self) -> None:
        self._pending: set[UUID] = set()
        self._wake = threading.Condition()
        self._pid: int | None = None

    def request(self, tenant_id: UUID) -> None:
        with self._wake:
            if self._pid != os.getpid():  # first use, or a forked child: its own thread
                self._pending.clear()
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="outbox-relay", daemon=True).start()
            self._pending.add(tenant_id)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                tenant_ids, self._pending = self._pending, set()
            for tenant_id in tenant_ids:
                try:
                    relay_tenant(tenant_id)
                except Exception:  # the commit stands; the sweep publishes later
                    log.warning("outbox relay after commit failed; the sweep will retry", exc_info=True)


_background = _BackgroundRelay()


@event.listens_for(Session, "after_commit")
def _relay_after_commit(session: Session) -> None:
    tenant_id = session.info.get(TENANT_KEY)
    if session.info.pop(_PENDING_KEY, False) and _publisher is not None and tenant_id is not None:
        _background.request(UUID(str(tenant_id)))


def relay_tenant(tenant_id: UUID, publisher: Publisher | None = None) -> int:
    """Publish the tenant's pending messages in creation order; returns how many were published.
    Rows are locked with SKIP LOCKED so concurrent relays never publish the same row at once."""
    publish = publisher or _publisher
    if publish is None:
        raise RuntimeError("no outbox publisher installed")
    published = 0
    while True:
        with tenant_session(tenant_id) as session:
            batch = session.exec(
                select(OutboxMessage)
                .order_by(col(OutboxMessage.created_at), col(OutboxMessage.id))
                .limit(RELAY_BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            for message in batch:
                try:
                    publish(message)
                except Exception as error:
                    # Keep this and later messages; record why, and stop until the next relay.
                    message.attempts += 1
                    message.last_error = f"{type(error).__name__}: {error}"[:500]
                    session.add(message)
                    log.warning("outbox publish failed for %s: %s", message.task, error)
                    return published
                session.delete(message)
                published += 1
                session.flush()
        if len(batch) < RELAY_BATCH:
            return published


SWEEP_LOCK = 727275
"""Advisory lock held by the running sweep: one sweep at a time, whatever the number of workers."""


def relay_all(publisher: Publisher | None = None, max_tenants: int = 1000) -> int:
    """The periodic sweep: relay every tenant that has pending messages (skipped while another runs)."""
    with get_engine().connect() as connection:
        if not connection.exec_driver_sql("SELECT pg_try_advisory_lock(%s)", (SWEEP_LOCK,)).scalar():
            return 0
        try:
            rows = connection.execute(text("SELECT * FROM trailmark_outbox_tenants(:n)"), {"n": max_tenants})
            tenant_ids = [row[0] for row in rows]
            connection.commit()
            return sum(relay_tenant(tenant_id, publisher) for tenant_id in tenant_ids)
        finally:
            connection.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (SWEEP_LOCK,))
            connection.commit()
