"""Two tasks that only the RabbitMQ tests' workers register (``tests.support.rabbitmq.start_broker_worker``). Each
writes a row per run into ``broker_test.task_runs``, so a test counts in PostgreSQL what a worker really did.

``record_run`` can hold its transaction open on an advisory lock the test owns: a worker killed there has
written nothing that stays. ``crash_worker`` commits its row and then kills its own pool process, as a task
whose input makes the interpreter crash or the kernel's OOM killer strike would: a poison message.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from celery import Task
from sqlalchemy import text

from tenants.isolation import system_session
from workers.app import celery_app

__all__ = ["CRASH_TASK", "RECORD_TASK", "RUNS_SCHEMA", "crash_worker", "record_run"]

RUNS_SCHEMA = "broker_test"
RECORD_TASK = "tests.broker.record_run"
CRASH_TASK = "tests.broker.crash_worker"


def _record(session: Any, task: Task, marker: str) -> None:
    session.execute(
        text(
            f"INSERT INTO {RUNS_SCHEMA}.task_runs (marker, task_id, redelivered, pid) "
            "VALUES (:marker, :task_id, :redelivered, :pid)"
        ),
        {
            "marker": marker,
            "task_id": task.request.id,
            "redelivered": bool((task.request.delivery_info or {}).get("redelivered")),
            "pid": os.getpid(),
        },
    )


@celery_app.task(name=RECORD_TASK, bind=True, ignore_result=True)
def record_run(self: Task, marker: str, wait_for_lock: int | None = None) -> None:
    """One row per completed run; with ``wait_for_lock``, the row commits only once the test lets go of it."""
    with system_session() as session:
        _record(session, self, marker)
        if wait_for_lock is not None:
            session.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": wait_for_lock})


@celery_app.task(name=CRASH_TASK, bind=True, ignore_result=True)
def crash_worker(self: Task, marker: str) -> None:
    """Counts the delivery, then dies the way no ``except`` can catch."""
    with system_session() as session:
        _record(session, self, marker)
    os.kill(os.getpid(), signal.SIGKILL)
