"""``tenant_task``: the one decorator that gives every tenant task its name, queue, retries,
tenant session and logging. Tasks take ids, never model objects."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

from celery import Task
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from tenants.isolation import tenant_session
from workers.app import celery_app

__all__ = ["TRANSIENT_ERRORS", "tenant_task"]

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("trailmark.tasks")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, ConnectionError, TimeoutError)
"""Errors worth retrying: the database or a network peer was briefly unreachable."""


def tenant_task(
    *, max_retries: int = 8, name: str | None = None, **options: Any
) -> Callable[[Callable[Concatenate[Session, P], R]], Task]:
    """Register ``fn(session, *args)`` as task ``trailmark.<module>.<fn>`` taking ``(tenant_id, *args)``.

    The body runs in one tenant-scoped transaction; transient failures retry with exponential
    backoff and jitter, up to ``max_retries``. Its queue is named in ``workers.app.TASK_ROUTES``.
    """

    def decorator(fn: Callable[Concatenate[Session, P], R]) -> Task:
        task_name = name or f"trailmark.{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}"

        @functools.wraps(fn)
        def run(self: Task, tenant_id: str, *args: Any, **kwargs: Any) -> R:
            started = time.perf_counter()
            context = {"task": task_name, "task_id": self.request.id, "tenant_id": tenant_id}
            try:
                with tenant_session(UUID(tenant_id)) as session:
                    result = fn(session, *args, **kwargs)
            except TRANSIENT_ERRORS as error:
                log.warning("task failed, retrying", extra={**context, "error": repr(error)})
                raise
            except Exception:
                log.exception("task failed", extra=context)
                raise
            log.info(
                "task done",
                extra={**context, "duration_ms": round((time.perf_counter() - started) * 1000, 1)},
            )
            return result

        task: Task = celery_app.task(
            run,
            bind=True,
            name=task_name,
            max_retries=max_retries,
            autoretry_for=TRANSIENT_ERRORS,
            retry_backoff=True,
            retry_backoff_max=300,
            retry_jitter=True,
            acks_late=True,
            **options,
        )
        return task

    return decorator
