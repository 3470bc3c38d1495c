"""Task metrics, kept by Celery's signals in the pool process that runs each task (``tenants.metrics``)."""

from __future__ import annotations

import time
from typing import Any

from celery import Task
from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_process_init,
    worker_process_shutdown,
)

from tenants.metrics import TASK_DURATION, TASK_FAILURES, TASK_RETRIES, TASK_RUNS, forget_process, set_process_role

__all__: list[str] = []

_started: dict[str, float] = {}
"""Start of each running task of this process, by task id."""


def _queue_of(request: Any) -> str:
    # Each queue has its own exchange and routing key (workers.app.configure), so the key names the queue; a
    # task delayed through RabbitMQ's delay queues arrives with the delay's bits before it ("0.1.….identity").
    delivery = getattr(request, "delivery_info", None) or {}
    return str(delivery.get("routing_key") or "none").rsplit(".", 1)[-1]


@task_prerun.connect
def _task_started(task_id: str, **_: Any) -> None:
    _started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id: str, task: Task, **_: Any) -> None:
    """Every run, whether it succeeded, failed or will be retried."""
    started = _started.pop(task_id, None)
    queue = _queue_of(task.request)
    TASK_RUNS.labels(queue, task.name).inc()
    if started is not None:
        TASK_DURATION.labels(queue, task.name).observe(time.perf_counter() - started)


@task_failure.connect
def _task_failed(sender: Task, **_: Any) -> None:
    TASK_FAILURES.labels(_queue_of(sender.request), sender.name).inc()


@task_retry.connect
def _task_retried(sender: Task, request: Any, **_: Any) -> None:
    TASK_RETRIES.labels(_queue_of(request), sender.name).inc()


@worker_process_init.connect
def _name_pool_process(**_: object) -> None:
    set_process_role("worker")


@worker_process_shutdown.connect
def _forget_pool_process(**_: object) -> None:
    forget_process()
