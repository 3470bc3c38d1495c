"""What a worker process prints: every log line of its pool processes reaches its output, once, as text
or as one JSON object a line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis
from celery import Celery

from tenants.embedded import free_port, start_redis_server
from tenants.isolation import tenant_session
from tenants.memberships.service import create_member, create_membership_site, reset_password
from tenants.outbox import service as outbox
from tenants.tracking.buffer import shard
from tests.conftest import REPO, TenantHandle, child_env, log_file, stop, wait_until
from workers.app import configure, install_outbox_publisher, outbox_publisher

pytestmark = pytest.mark.slow


@dataclass
class WorkerUnderWatch:
    """A real worker (prefork pool) on a Redis of its own, with no SMTP server configured, whose output
    (stdout and stderr) goes to a file the test reads."""

    celery: Celery
    output_path: Path

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        return wait_until(lambda: re.search(pattern, self.output()), timeout, f"worker output to show {pattern!r}")


@pytest.fixture
def watched_worker() -> Iterator[Callable[..., WorkerUnderWatch]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> WorkerUnderWatch:
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        redis_dir = Path(tempfile.mkdtemp(prefix="trailmark-log-redis-"))
        started.append(start_redis_server(redis_dir, port, persistent=False))
        with log_file("watched-worker") as output:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "api.cli", "worker", "--concurrency", "2"],
                    cwd=REPO,
                    env=child_env(**{"TRAILMARK_REDIS_URL": url, "TRAILMARK_SMTP_URL": "", **env}),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
        app = Celery("logging-test", set_as_current=False)
        configure(app, url)
        # Work enqueued by the test (an invitation's mail) is published to this worker's Redis.
        outbox.set_publisher(outbox_publisher(url))
        return WorkerUnderWatch(app, Path(output.name))

    yield start
    install_outbox_publisher()
    for process in reversed(started):
        stop(process)


def invite_member(tenant: TenantHandle, email: str) -> Any:
    with tenant_session(tenant.tenant_id) as session:
        site = create_membership_site(session, name="Club")
        create_member(session, site_id=site.id, email=email, first_name="Ines")
        return site.id


def test_an_invited_member_gets_the_set_password_link_from_the_log_when_no_smtp_is_set(
    watched_worker: Callable[..., WorkerUnderWatch], make_tenant: Callable[..., TenantHandle]
) -> None:
    """Without SMTP (the embedded default) the invitation is logged instead of sent: that line is the only
    way the member can ever get a password, so it must reach the worker's output."""
    worker = watched_worker()
    tenant = make_tenant("Logline")
    site_id = invite_member(tenant, "ines@example.com")

    link = worker.wait_for(rf"/s/{tenant.slug}/m/{site_id}/password/set\?token=([A-Za-z0-9_.-]+)")
    assert worker.output().count("/password/set?token=") == 1, worker.output()
    assert "ines@example.com" in worker.output()
    # The link in the log is the real thing: it sets the member's password.
    reset_password(tenant.tenant_id, site_id, link.group(1), "a long new password")


def test_a_failing_task_shows_its_error_once_with_its_tenant(
    watched_worker: Callable[..., WorkerUnderWatch],
) -> None:
    worker = watched_worker()
    missing_tenant = str(uuid4())
    task_id = worker.celery.send_task("trailmark.system.ping", args=[missing_tenant, "hello"]).id

    worker.wait_for(r"tenants\.errors\.NotFound: tenant not found")  # the traceback's last line
    failure_lines = [line for line in worker.output().splitlines() if task_id in line]
    assert len(failure_lines) == 1, worker.output()
    [line] = failure_lines
    assert " ERROR trailmark.tasks: trailmark.system.ping failed: NotFound: tenant not found" in line
    assert missing_tenant in line
    assert "raised unexpected" not in worker.output()  # Celery's own line for the same failure


def test_a_transient_failure_says_it_will_retry(watched_worker: Callable[..., WorkerUnderWatch]) -> None:
    """An SMTP server that refuses connections: each retry is one warning, not silence and not a traceback."""
    worker = watched_worker(TRAILMARK_SMTP_URL=f"smtp://127.0.0.1:{free_port()}")
    tenant_id = str(uuid4())
    task_id = worker.celery.send_task("trailmark.mail.send", args=[tenant_id, "ines@example.com", "Hi", "Body"]).id

    retry = worker.wait_for(r"WARNING trailmark\.tasks: trailmark\.mail\.send failed, retry 1 of 10 in \d+s: (.*) \{")
    assert "ConnectionRefusedError" in retry.group(1)
    first, *_later_retries = [line for line in worker.output().splitlines() if task_id in line]
    assert tenant_id in first
    assert "Traceback" not in worker.output()


def test_an_entry_the_ingest_cannot_store_is_reported(watched_worker: Callable[..., WorkerUnderWatch]) -> None:
    """A page view parked in the dead-letter stream is lost to the reports unless the operator hears of it."""
    worker = watched_worker()
    client = redis.Redis.from_url(worker.celery.conf.broker_url)
    client.xadd(shard(0).stream, {"d": b"not an envelope"})
    client.close()
    worker.celery.send_task("trailmark.ingest.drain")

    worker.wait_for(rf"WARNING tenants\.tracking\.ingest: ingest parked 1 entries in {re.escape(shard(0).dead)}")


def test_json_logs_are_one_object_a_line(
    watched_worker: Callable[..., WorkerUnderWatch], make_tenant: Callable[..., TenantHandle]
) -> None:
    worker = watched_worker(TRAILMARK_LOG_JSON="true")
    tenant = make_tenant("Jsonline")
    site_id = invite_member(tenant, "jo@example.com")
    task_id = worker.celery.send_task("trailmark.system.ping", args=[str(uuid4())]).id

    def records() -> list[dict[str, Any]]:
        return [json.loads(line) for line in worker.output().splitlines() if line.strip()]

    wait_until(lambda: any(r.get("task_id") == task_id for r in records()), 60, "the failure in the JSON log")
    wait_until(lambda: any("password/set" in str(r.get("body")) for r in records()), 60, "the mail in the JSON log")
    lines = [line for line in worker.output().splitlines() if line.strip()]
    assert all(isinstance(json.loads(line), dict) for line in lines), lines
    [failure] = [r for r in records() if r.get("task_id") == task_id]
    assert (failure["level"], failure["task"]) == ("error", "trailmark.system.ping")
    assert "NotFound: tenant not found" in failure["exc"]
    [mail] = [r for r in records() if r["logger"] == "trailmark.mail"]
    assert f"/m/{site_id}/password/set?token=" in mail["body"]
