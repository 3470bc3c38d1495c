"""The one place that ties a database session to a tenant.

Every transaction of a :func:`tenant_session` starts with ``SET LOCAL app.tenant_id = '<uuid>'``:
transaction-local, so a pooled connection never carries a tenant into the next transaction. A ``SET LOCAL``
statement (unlike a ``set_config()`` call) is what Citus forwards to its worker nodes (docs/scale.md).
PostgreSQL row-level security does the filtering; a session without a tenant sees no tenant rows at all.

A :func:`partner_session` (the partner portal) also sets ``app.partner_id`` the same way, in the same
statement; the partner tables' restrictive policies then show only that partner's rows, and every other
tenant table shows none.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session, create_engine

from tenants.errors import NotFound
from tenants.metrics import watch_pool
from tenants.settings import get_settings

T = TypeVar("T")

__all__ = [
    "PARTNER_KEY",
    "TENANT_KEY",
    "current_tenant_id",
    "dispose_engine",
    "get_engine",
    "get_owned",
    "partner_session",
    "system_session",
    "tenant_binding_sql",
    "tenant_session",
]

TENANT_KEY = "tenant_id"
"""Key in ``Session.info`` that holds the tenant of every transaction of the session."""
PARTNER_KEY = "partner_id"
"""Key in ``Session.info`` that holds the partner a portal session is narrowed to."""

_engine: Engine | None = None
_lock = threading.Lock()


def get_engine() -> Engine:
    """The process's engine, created on first use and again after a fork (Celery prefork, uvicorn workers)."""
    global _engine  # noqa: PLW0603 - one engine per process by design
    if _engine is None:
        with _lock:
            if _engine is None:
                settings = get_settings()
                if settings.database_url is None:
                    raise RuntimeError("TRAILMARK_DATABASE_URL is not set")
                _engine = create_engine(
                    settings.database_url,
                    pool_size=settings.database_pool_size,
                    max_overflow=0,
                    pool_pre_ping=True,
                    pool_timeout=30,
                    connect_args={"connect_timeout": 5, "application_name": "trailmark"},
                )
                watch_pool(_engine, settings.database_pool_size)
    return _engine


def dispose_engine() -> None:
    """Close the engine's connections and forget it (tests, shutdown)."""
    global _engine  # noqa: PLW0603
    if _engine is not None:
        _engine.dispose()
    _engine = None


def _forget_engine_after_fork() -> None:
    # A forked child (Celery prefork) must not use or close its parent's sockets: drop them unclosed.
    global _engine  # noqa: PLW0603
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = None


os.register_at_fork(after_in_child=_forget_engine_after_fork)


def tenant_binding_sql(tenant_id: object, partner_id: object | None = None) -> str:
    """The one statement that binds a transaction to its tenant (and portal partner).

    ``SET`` takes no bind parameters, so the values are written into the text: each is first parsed by
    ``UUID(...)``, whose canonical form is hex digits and dashes only, so nothing but a UUID can reach the
    SQL (no injection). Several ``SET LOCAL`` in one simple-query string keep it one round trip.
    """
    statement = f"SET LOCAL app.tenant_id = '{UUID(str(tenant_id))}'"
    if partner_id is not None:
        statement += f"; SET LOCAL app.partner_id = '{UUID(str(partner_id))}'"
    return statement


@event.listens_for(Session, "after_begin")
def _bind_tenant(session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
    tenant_id = session.info.get(TENANT_KEY)
    if tenant_id is not None:
        # No parameters: psycopg sends it as a simple query, which may hold several statements.
        connection.exec_driver_sql(tenant_binding_sql(tenant_id, session.info.get(PARTNER_KEY)))


@contextmanager
def tenant_session(tenant_id: UUID, *, engine: Engine | None = None) -> Iterator[Session]:
    """A session whose every transaction is scoped to ``tenant_id``; commits on success, rolls back
    on error."""
    session = Session(engine or get_engine(), expire_on_commit=False, info={TENANT_KEY: tenant_id})
    with session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def partner_session(tenant_id: UUID, partner_id: UUID, *, engine: Engine | None = None) -> Iterator[Session]:
    """A :func:`tenant_session` narrowed to one partner (the partner portal): it sees that partner's rows of
    the partner tables, the contacts it referred, and nothing of any other table or partner."""
    session = Session(
        engine or get_engine(), expire_on_commit=False, info={TENANT_KEY: tenant_id, PARTNER_KEY: partner_id}
    )
    with session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def system_session(*, engine: Engine | None = None) -> Iterator[Session]:
    """A session with no tenant: it sees no tenant rows (RLS fails closed). For health checks and
    the security-definer helpers that return only ids, never tenant data."""
    session = Session(engine or get_engine(), expire_on_commit=False)
    with session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def get_owned(session: Session, model: type[T], key: Any, what: str) -> T:
    """The session's tenant's ``model`` row with this key, or :class:`NotFound` ("<what> not found")."""
    row = session.get(model, (current_tenant_id(session), key))
    if row is None:
        raise NotFound(f"{what} not found")
    return row


def current_tenant_id(session: Session) -> UUID:
    """The tenant a session is bound to; raises if it has none (a bug, never user input)."""
    tenant_id: Any = session.info.get(TENANT_KEY)
    if tenant_id is None:
        raise RuntimeError("session is not bound to a tenant")
    return UUID(str(tenant_id))
