"""Tasks through a real Celery worker on real Redis, and the outbox's delivery guarantees."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery
from celery.result import AsyncResult
from sqlalchemy import text

from tenants.embedded import free_port, start_redis_server
from tenants.isolation import tenant_session
from tenants.outbox import service as outbox
from tests.conftest import TenantHandle, start_worker, wait_until
from workers.app import (
    QUEUES,
    celery_app,
    configure,
    install_outbox_publisher,
    outbox_publisher,
    publish_outbox_message,
)
from workers.system import ping


@pytest.fixture(autouse=True)
def process_publisher() -> Iterator[None]:
    """This test process publishes after commit, as the API and workers do."""
    install_outbox_publisher()
    yield
    install_outbox_publisher()


def pending_outbox(tenant: TenantHandle) -> int:
    with tenant_session(tenant.tenant_id) as session:
        return int(session.execute(text("SELECT count(*) FROM outbox")).scalar() or 0)


def test_every_task_goes_to_its_queue() -> None:
    import workers.conversions
    import workers.identity
    import workers.ingest
    import workers.mail
    import workers.partners
    import workers.privacy
    import workers.purchases
    import workers.reports

    queues = {name: celery_app.amqp.router.route({}, name)["queue"].name for name in celery_app.tasks}
    # Ingest has a queue (and workers) of its own, so identity and mail never wait behind page views.
    assert queues[workers.ingest.drain_ingest_stream.name] == "ingest"
    assert queues[workers.ingest.ensure_visit_partitions.name] == "default"
    assert queues[workers.identity.merge_history.name] == "identity"
    assert queues[ping.name] == "default"
    assert queues[workers.reports.check_rollups.name] == "default"
    assert queues[workers.purchases.process_stripe_event.name] == "default"
    assert queues[workers.purchases.purchase_recorded.name] == "default"
    assert queues[workers.purchases.purchase_refunded.name] == "default"
    assert queues[workers.partners.approve_due.name] == "default"
    assert queues[workers.privacy.erase.name] == "default"
    assert queues[workers.privacy.expire_retention.name] == "default"
    # Conversions wait behind no page view, merge or mail: their queue has its own workers when scaled out.
    assert queues[workers.conversions.record_conversion.name] == "conversions"
    assert queues[workers.conversions.flush_conversions.name] == "conversions"
    assert queues[workers.conversions.retract_conversions.name] == "conversions"
    assert set(queues.values()) <= set(QUEUES)


def test_task_round_trip_through_a_real_worker(
    worker: subprocess.Popen[bytes], make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("November")
    result = ping.delay(str(tenant.tenant_id), "hello")
    # The worker ran the task inside the tenant's own scope: it could read the tenant's row.
    assert result.get(timeout=60) == {"tenant": tenant.slug, "note": "hello"}


def test_outbox_publishes_only_committed_transactions(
    worker: subprocess.Popen[bytes], make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Oscar")
    committed, rolled_back = [], []
    for i in range(40):
        try:
            with tenant_session(tenant.tenant_id) as session:
                message = outbox.enqueue(session, "trailmark.system.ping", f"n{i}")
                session.flush()
                (committed if i % 2 else rolled_back).append(message.id)
                if i % 2 == 0:
                    raise RuntimeError("business rule failed")
        except RuntimeError:
            pass
    for message_id in committed:
        assert AsyncResult(str(message_id), app=celery_app).get(timeout=60)["tenant"] == tenant.slug
    assert pending_outbox(tenant) == 0
    for message_id in rolled_back:
        assert AsyncResult(str(message_id), app=celery_app).state == "PENDING"  # never published


@pytest.mark.slow
def test_outbox_survives_a_redis_outage_and_delivers_after(make_tenant: Callable[..., TenantHandle]) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    private = Celery("outage-test")
    configure(private, url)
    publish = outbox_publisher(url)
    outbox.set_publisher(publish)  # this process's broker is down
    tenant = make_tenant("Papa")

    # Redis is down: the write commits, the relay after commit fails, the message waits in PostgreSQL.
    with tenant_session(tenant.tenant_id) as session:
        message = outbox.enqueue(session, "trailmark.system.ping", "after-outage")

    def last_error() -> str | None:
        with tenant_session(tenant.tenant_id) as session:
            return session.execute(text("SELECT last_error FROM outbox")).scalar()

    assert "Connection refused" in wait_until(last_error, 30, "the relay to record the outage")
    assert pending_outbox(tenant) == 1

    redis_dir = Path(tempfile.mkdtemp(prefix="trailmark-outage-"))
    redis_server = start_redis_server(redis_dir, port, persistent=False)
    private_worker = start_worker(TRAILMARK_REDIS_URL=url)
    try:
        assert outbox.relay_all(publish) >= 1
        result = AsyncResult(str(message.id), app=private).get(timeout=60)
        assert result == {"tenant": tenant.slug, "note": "after-outage"}
        assert pending_outbox(tenant) == 0
    finally:
        private_worker.terminate()
        private_worker.wait(30)
        redis_server.terminate()
        redis_server.wait(10)


def test_sweep_relays_what_the_immediate_relay_left(
    worker: subprocess.Popen[bytes], make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Quebec")
    outbox.set_publisher(None)  # as if this process could not publish at commit time
    with tenant_session(tenant.tenant_id) as session:
        message = outbox.enqueue(session, "trailmark.system.ping", "swept")
    assert pending_outbox(tenant) == 1

    def swept() -> bool:
        # This sweep or beat's, when the session's pipeline runs: one sweep at a time, and either relays it.
        outbox.relay_all(publish_outbox_message)
        return pending_outbox(tenant) == 0

    wait_until(swept, 30, "a sweep to relay the message", interval=0.5)
    assert AsyncResult(str(message.id), app=celery_app).get(timeout=60)["note"] == "swept"
