"""Sharded ingest on one Redis: collect spreads visitors over several streams, several ingest workers drain them
under leases, and a worker killed mid-run hands its shards on; every acknowledged hit is stored once, and each
visitor's visits in the order they were sent (first touch is the first page)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import msgspec
import psycopg
import pytest
import redis

from tenants.redis_store import get_redis, parse_cluster_url
from tenants.settings import Settings, SettingsError
from tenants.tracking.buffer import GROUP, LEGACY, shards
from tenants.tracking.hits import Envelope, Hit
from tests.conftest import TenantHandle, make_site, start_api_server, start_beat, stop, wait_stored, wait_until
from tests.support.ingest import (
    ORIGIN,
    Load,
    is_storing,
    kill_dash_nine,
    start_ingest_worker,
    visitors_out_of_order,
    wait_all_stored,
)

SERVICES = {"TRAILMARK_DATABASE_URL": "postgresql://app@db/trailmark", "TRAILMARK_REDIS_URL": "redis://broker:6379/0"}
KEYS = {"TRAILMARK_SIGNING_KEYS": "k1:" + "a" * 43, "TRAILMARK_SECRET_KEYS": "s1:" + "b" * 43}


def test_the_ingest_redis_may_be_a_cluster_and_the_main_redis_may_not() -> None:
    plain = Settings.from_env({**SERVICES, **KEYS})
    assert plain.ingest_redis == "redis://broker:6379/0" and plain.ingest_shards == 1
    cluster = Settings.from_env(
        {
            **SERVICES,
            **KEYS,
            "TRAILMARK_INGEST_REDIS_URL": "redis-cluster://:s3cret@r1:7001,r2:7002",
            "TRAILMARK_INGEST_SHARDS": "8",
        }
    )
    assert cluster.ingest_redis == "redis-cluster://:s3cret@r1:7001,r2:7002" and cluster.ingest_shards == 8
    parsed = parse_cluster_url(cluster.ingest_redis or "")
    assert parsed is not None and parsed.nodes == (("r1", 7001), ("r2", 7002)) and parsed.password == "s3cret"
    with pytest.raises(SettingsError, match="TRAILMARK_REDIS_URL must name one Redis node"):
        Settings.from_env({**SERVICES, **KEYS, "TRAILMARK_REDIS_URL": "redis-cluster://r1:7001"})
    with pytest.raises(SettingsError, match="TRAILMARK_INGEST_REDIS_URL must look like"):
        Settings.from_env({**SERVICES, **KEYS, "TRAILMARK_INGEST_REDIS_URL": "redis-cluster://r1,r2:7002"})
    with pytest.raises(SettingsError, match="TRAILMARK_INGEST_SHARDS"):
        Settings.from_env({**SERVICES, **KEYS, "TRAILMARK_INGEST_SHARDS": "0"})


SHARDS = 4
LEASE_MS = 5000
"""Short here, so the test sees a takeover within seconds (production: 10 s)."""


@pytest.mark.slow
def test_four_shards_two_workers_one_killed_store_every_visit_once_and_in_order(
    make_tenant: Callable[..., TenantHandle],
    owner_url: str,
    private_redis: tuple[str, Callable[[], None], Callable[[], None]],
) -> None:
    url, _, _ = private_redis
    env = {
        "TRAILMARK_REDIS_URL": url,
        "TRAILMARK_INGEST_SHARDS": str(SHARDS),
        "TRAILMARK_INGEST_LEASE_MS": str(LEASE_MS),
        "TRAILMARK_INGEST_CLAIM_IDLE_MS": "1000",
    }
    site = make_site(make_tenant("Shards"), [ORIGIN])
    client = redis.Redis.from_url(url)
    api = start_api_server(None, workers=1, **env)
    workers = [start_ingest_worker(**env), start_ingest_worker(**env)]
    beat = start_beat(**env)
    try:
        load = Load(api.base_url, site.site_key, visitors=120, pages=12, hits_per_batch=5).start()
        doomed = workers[0]

        wait_until(lambda: load.acknowledged > 500, 60, "the load to be under way")
        # The database holds the visitors' inserts a moment (a slow disk, a long report), so that the first worker
        # is caught with a shard held and its entries read but not stored.
        with psycopg.connect(owner_url) as database:
            database.execute("LOCK TABLE visitors IN SHARE MODE")
            wait_until(lambda: is_storing(doomed, client, SHARDS), 60, "the first worker to be storing", interval=0.02)
            kill_dash_nine(doomed)
        load.wait()
        sent = load.acknowledged
        assert sent == 120 * 12 * 5 and load.refused == 0

        wait_all_stored(site.tenant.tenant_id, sent, 90, f"{sent} visits stored by the surviving worker")
    finally:
        stop(beat)
        for process in workers:
            stop(process)
        api.stop()
    assert visitors_out_of_order(site.tenant.tenant_id) == []
    # Every shard carried visitors, and each was drained to the end.
    for each in shards(SHARDS):
        (group,) = client.xinfo_groups(each.stream)
        assert group["name"].decode() == GROUP
        assert group["last-delivered-id"] != b"0-0", f"{each.stream} got nothing"
        assert client.xlen(each.stream) == 0 and group["pending"] == 0
    client.close()


@pytest.mark.usefixtures("pipeline")
def test_batches_left_in_the_unsharded_stream_of_an_earlier_version_are_stored(
    make_tenant: Callable[..., TenantHandle],
) -> None:
    """A rolling upgrade: what the previous version's collect appended to ``trailmark:ingest`` is still stored."""
    site = make_site(make_tenant("Upgrade"), [ORIGIN])
    now = int(time.time() * 1000)
    envelope = Envelope(
        tenant_id=site.tenant.tenant_id,
        site_id=site.site_id,
        visitor_id=uuid.uuid4(),
        received_at=now,
        hits=[Hit(hit_id=uuid.uuid4(), ts=now - n, url=f"{ORIGIN}/old{n}") for n in range(3)],
    )
    get_redis().xadd(LEGACY.stream, {"d": msgspec.json.encode(envelope)})
    wait_stored(site.tenant.tenant_id, 3)
    wait_until(lambda: get_redis().xlen(LEGACY.stream) == 0, 30, "the unsharded stream emptied")
