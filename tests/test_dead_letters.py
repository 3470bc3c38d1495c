"""An operator sees the ingest entries that could not be stored, with why, and puts them back once the
cause is fixed: ``trailmark ingest dead-letters [--replay]`` and ``/ready``, against the real Redis,
Celery ingest worker and PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from tenants.isolation import tenant_session
from tenants.models import Site
from tenants.redis_store import get_redis
from tenants.tracking.buffer import shard
from tenants.tracking.hits import Envelope, Hit
from tests.conftest import REPO, TenantHandle, child_env, stored_visits, wait_stored, wait_until

pytestmark = pytest.mark.usefixtures("pipeline")


def trailmark(*args: str) -> str:
    """The command line, as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def letters_of(tenant: TenantHandle) -> list[str]:
    return [
        line
        for line in trailmark("ingest", "dead-letters", "--limit", "100000").splitlines()
        if str(tenant.tenant_id) in line
    ]


def test_dead_letters_are_listed_with_their_reason_and_replayed_once_fixed(
    client: TestClient[Any], make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant = make_tenant("Letters")
    # Hits of a site that is not there (yet): ingest cannot store them and keeps them aside.
    missing_site = uuid.uuid4()
    hit = Hit(hit_id=uuid.uuid4(), ts=int(time.time() * 1000), url="https://shop.example/")
    envelope = Envelope(
        tenant_id=tenant.tenant_id,
        site_id=missing_site,
        visitor_id=uuid.uuid4(),
        received_at=int(time.time() * 1000),
        hits=[hit],
    )
    data = msgspec.json.encode(envelope)
    for _ in range(2):  # delivered twice (at-least-once): still one visit in the end
        get_redis().xadd(shard(0).stream, {"d": data})

    wait_until(lambda: len(letters_of(tenant)) == 2, 60, "both entries dead-lettered", interval=0.3)
    for line in letters_of(tenant):
        assert "1 hits" in line
        assert "foreign key" in line, line  # why, in PostgreSQL's words
    ready = client.get("/ready")
    assert ready.status_code == 200  # dead letters need an operator, not another instance
    assert ready.json()["ingest_dead_letters"] >= 2

    # The operator fixes the cause (the site is restored) and replays.
    with tenant_session(tenant.tenant_id) as session:
        session.add(
            Site(
                id=missing_site,
                tenant_id=tenant.tenant_id,
                name="Restored",
                site_key=uuid.uuid4().hex[:16],
                allowed_origins=["https://shop.example"],
            )
        )
    replayed = trailmark("ingest", "dead-letters", "--replay")
    count = re.search(r"replayed (\d+) dead letters", replayed)
    assert count is not None, replayed
    assert int(count.group(1)) >= 2  # this tenant's two, and any another test left on the shared Redis
    wait_stored(tenant.tenant_id, 1)
    assert letters_of(tenant) == []
    # Each letter was replayed once: none is left to replay again, and the visit was stored once.
    assert stored_visits(tenant.tenant_id) == 1


def test_a_cookieless_batch_parked_as_a_dead_letter_keeps_no_hash_of_its_browser(
    make_tenant: Callable[..., TenantHandle],
) -> None:
    """The day's hash of a browser before consent lives in Redis for the day only; a dead letter waits for an
    operator, so it keeps the batch without the hash."""
    tenant = make_tenant("Parkedhash")
    day_hash = uuid.uuid4()
    envelope = Envelope(
        tenant_id=tenant.tenant_id,
        site_id=uuid.uuid4(),  # no such site: its counts cannot be stored
        visitor_id=day_hash,
        received_at=int(time.time() * 1000),
        hits=[Hit(hit_id=uuid.uuid4(), ts=int(time.time() * 1000), url="https://shop.example/", path="/")],
        cookieless=True,
    )
    stream = shard(0)
    get_redis().xadd(stream.stream, {"d": msgspec.json.encode(envelope)})
    wait_until(lambda: letters_of(tenant), 60, "the batch parked")
    parked = [
        msgspec.json.decode(fields[b"d"], type=Envelope)
        for _, fields in get_redis().xrange(stream.dead)
        if str(tenant.tenant_id).encode() in fields[b"d"]
    ]
    assert len(parked) == 1 and parked[0].cookieless and parked[0].hits == envelope.hits
    assert parked[0].visitor_id != day_hash
    assert str(day_hash).encode() not in b"".join(v for _, f in get_redis().xrange(stream.dead) for v in f.values())
