"""``tenant_task``: the one decorator that gives every tenant task its name, queue, retries,
tenant session and logging. Tasks take ids, never model objects."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

from celery import Task
from celery.app import trace as celery_trace
from celery.exceptions import Retry
from celery.signals import task_failure, task_retry
from sqlmodel import Session

from tenants.errors import UNAVAILABLE
from tenants.isolation import tenant_session
from workers.app import celery_app

__all__ = ["TRANSIENT_ERRORS", "tenant_task"]

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("trailmark.tasks")

TRANSIENT_ERRORS = UNAVAILABLE
"""Errors worth retrying: the database, Redis or a network peer was briefly unreachable."""


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
        def run(tenant_id: str, *args: Any, **kwargs: Any) -> R:
            with tenant_session(UUID(tenant_id)) as session:
                return fn(session, *args, **kwargs)

        task: Task = celery_app.task(
            run,
            name=task_name,
            max_retries=max_retries,
            autoretry_for=TRANSIENT_ERRORS,
            retry_backoff=True,
            retry_backoff_max=300,
            retry_jitter=True,
            acks_late=True,
            **options,
        )
        _TENANT_TASKS.add(task_name)
        return task

    return decorator


_TENANT_TASKS: set[str] = set()
"""Names of the tasks whose first argument is a tenant id, so their log lines name the tenant."""


def _task_context(task: Task, task_id: str | None, args: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"task": task.name, "task_id": task_id}
    if task.name in _TENANT_TASKS and args:
        context["tenant_id"] = args[0]
    return context


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


@task_failure.connect
def _log_task_failure(
    sender: Task, task_id: str, exception: BaseException, args: Any, traceback: TracebackType | None, **_: Any
) -> None:
    """One error line (and its traceback) per task that failed for good: out of retries, or not retryable."""
    log.error(
        "%s failed: %s",
        sender.name,
        _describe(exception),
        exc_info=(type(exception), exception, traceback),
        extra=_task_context(sender, task_id, args),
    )


@task_retry.connect
def _log_task_retry(sender: Task, request: Any, reason: Retry, **_: Any) -> None:
    """One warning per retry of a transient failure; the traceback waits for the final failure."""
    error = reason.exc if isinstance(reason.exc, BaseException) else reason
    log.warning(
        "%s failed, retry %d of %d in %ss: %s",
        sender.name,
        request.retries + 1,
        sender.max_retries,
        reason.when,
        _describe(error),
        extra=_task_context(sender, request.id, request.args),
    )


class _WithoutCeleryTaskOutcomes(logging.Filter):
    """Drops Celery's own line for a failure or retry: the receivers above say it once, with the tenant,
    and without the task's arguments (an e-mail address, a password link). Internal errors stay."""

    _FORMATS = frozenset(fmt.strip() for fmt in (celery_trace.LOG_FAILURE, celery_trace.LOG_RETRY))

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).strip() in self._FORMATS and record.levelno < logging.CRITICAL)


logging.getLogger(celery_trace.logger.name).addFilter(_WithoutCeleryTaskOutcomes())
