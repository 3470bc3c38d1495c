"""Sharded ingest on one Redis: collect spreads visitors over several streams, several ingest workers drain them
under leases, and a worker killed mid-run hands its shards on; every acknowledged hit is stored once, and each
visitor's visits in the order they were sent (first touch is the first page)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tenants.tracking.buffer import GROUP, shards
from tests.conftest import TenantHandle, make_site, start_api_server, start_beat, stop, wait_until
from tests.support.ingest import (
    ORIGIN,
    Load,
    is_storing,
    kill_dash_nine,
    start_ingest_worker,
    stored_count,
    visitors_out_of_order,
)

SHARDS = 4
LEASE_MS = 1500
"""Short here, so the test sees a takeover within seconds (production: 10 s)."""


@pytest.mark.slow
def test_four_shards_two_workers_one_killed_store_every_visit_once_and_in_order(
    make_tenant: Callable[..., TenantHandle],
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
        load = Load(api.base_url, site.site_key, visitors=120, pages=12, hits_per_batch=2).start()
        doomed = workers[0]

        wait_until(lambda: is_storing(doomed, client, SHARDS), 60, "the first worker to be storing", interval=0.005)
        kill_dash_nine(doomed)  # mid-batch: holding a lease, entries read and not acknowledged
        load.wait()
        sent = load.acknowledged
        assert sent == 120 * 12 * 2 and load.refused == 0

        def all_stored() -> bool:
            stored, distinct = stored_count(site.tenant.tenant_id)
            assert stored == distinct, f"{stored - distinct} hits stored twice"
            assert stored <= sent
            return stored == sent

        wait_until(all_stored, 90, f"{sent} visits stored by the surviving worker", interval=0.2)
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
