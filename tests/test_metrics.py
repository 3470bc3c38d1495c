"""``/metrics``: what an operator's Prometheus scrapes. Counters move by exactly what happened, summed over
every process of the host; backlogs are read at scrape time; a scrape needs the token, and a Redis that
is down is reported instead of failing the scrape."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tenants.settings import Settings, SettingsError
from tenants.tracking.buffer import shard
from tests.conftest import (
    REPO,
    LiveServer,
    SiteHandle,
    TenantHandle,
    child_env,
    log_file,
    make_site,
    start_api_server,
    stop,
    wait_until,
)

TOKEN = "metrics-" + "5f0c" * 12
ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
HEADERS = {"Origin": ORIGIN, "User-Agent": BROWSER, "Content-Type": "text/plain;charset=UTF-8"}
TEST_QUEUE = "metrics-test"
"""Only this module's worker consumes it, so its task counts are this module's alone."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(api: LiveServer, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{api.base_url}/metrics", headers=headers, timeout=30)


def samples(api: LiveServer) -> Samples:
    response = scrape(api)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def hit() -> dict[str, Any]:
    return {"hit_id": str(uuid.uuid4()), "ts": int(time.time() * 1000), "url": f"{ORIGIN}/", "path": "/"}


def batch(*hits: dict[str, Any]) -> bytes:
    return json.dumps({"v": 1, "hits": list(hits)}).encode()


def post(api: LiveServer, site: SiteHandle, body: bytes, **headers: str) -> int:
    # A connection per batch, as browsers' beacons mostly come, so the API processes share the batches.
    response = httpx.post(f"{api.base_url}/collect/{site.site_key}", content=body, headers={**HEADERS, **headers})
    return response.status_code


@pytest.fixture(scope="module")
def metrics_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="trailmark-test-metrics-"))


@pytest.fixture(scope="module")
def api(metrics_dir: Path) -> Iterator[LiveServer]:
    """Two API processes, as behind a load balancer, sharing one metrics folder with the worker."""
    server = start_api_server(workers=2, TRAILMARK_METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def queue_worker(metrics_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker", "--queues", TEST_QUEUE, "--concurrency", "1"],
        cwd=REPO,
        env=child_env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)),
        stdout=log_file("metrics-worker"),
        stderr=subprocess.STDOUT,
    )
    yield process
    stop(process)


@pytest.fixture
def site(make_tenant: Callable[..., TenantHandle]) -> SiteHandle:
    return make_site(make_tenant("Metrics"), [ORIGIN])


def test_metrics_are_off_until_a_token_is_configured(api_server: LiveServer) -> None:
    """Nothing about the system is exposed by default."""
    assert scrape(api_server).status_code == 404
    assert scrape(api_server, token=None).status_code == 404


def test_a_scrape_without_the_token_or_with_another_is_refused(api: LiveServer) -> None:
    for response in (
        scrape(api, token=None),
        scrape(api, token="metrics-" + "0" * 48),
        scrape(api, token=TOKEN[:-1]),
        httpx.get(f"{api.base_url}/metrics", headers={"Authorization": f"Basic {TOKEN}"}),
    ):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "trailmark_" not in response.text
    assert scrape(api).status_code == 200


def test_collect_counters_move_by_exactly_what_collect_answered(api: LiveServer, site: SiteHandle) -> None:
    """Accepted hits and refused batches by reason, summed over both API processes whichever served what."""
    before = samples(api)
    accepted = [post(api, site, batch(*(hit() for _ in range(3)))) for _ in range(10)]
    bad_origin = [post(api, site, batch(hit()), Origin="https://elsewhere.example") for _ in range(4)]
    oversized = [post(api, site, batch({**hit(), "props": {"blob": "x" * 40_000}})) for _ in range(3)]
    malformed = [post(api, site, b"{not json") for _ in range(2)]
    assert (set(accepted), set(bad_origin), set(oversized), set(malformed)) == ({202}, {403}, {413}, {400})
    after = samples(api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("trailmark_collect_batches_total", outcome="accepted", reason="") == 10
    assert moved("trailmark_collect_hits_total", outcome="accepted", reason="") == 30
    assert moved("trailmark_collect_batches_total", outcome="refused", reason="origin") == 4
    assert moved("trailmark_collect_batches_total", outcome="refused", reason="too_large") == 3
    assert moved("trailmark_collect_batches_total", outcome="refused", reason="malformed") == 2
    assert moved("trailmark_collect_hits_total", outcome="refused", reason="origin") == 0  # never decoded

    assert value(after, "trailmark_up", component="redis") == 1
    assert value(after, "trailmark_up", component="database") == 1
    for gauge in (
        "trailmark_ingest_backlog_entries",
        "trailmark_ingest_pending_entries",
        "trailmark_ingest_lag_seconds",
    ):
        assert (gauge, frozenset({("stream", shard(0).stream)})) in after, gauge
        assert value(after, gauge, stream=shard(0).stream) >= 0
    assert ("trailmark_ingest_dead_letters", frozenset({("stream", shard(0).dead)})) in after
    assert ("trailmark_queue_waiting_tasks", frozenset({("queue", "ingest")})) in after
    assert ("trailmark_outbox_oldest_age_seconds", frozenset()) in after
    for platform in ("meta", "google_ads", "tiktok"):
        assert ("trailmark_conversions_queued", frozenset({("platform", platform)})) in after
        assert ("trailmark_integrations_paused", frozenset({("platform", platform)})) in after
    assert value(after, "trailmark_db_pool_connections_capacity", role="api") > 0


def test_paused_integrations_of_every_tenant_are_counted_per_platform(
    api: LiveServer, make_tenant: Callable[..., TenantHandle]
) -> None:
    """Read across tenants through the owner-run aggregate, which names no tenant."""
    from tenants.conversions.integrations import create_integration
    from tenants.isolation import tenant_session
    from tenants.models import Platform

    before = samples(api)
    for name in ("PausedA", "PausedB"):
        with tenant_session(make_tenant(name).tenant_id) as session:
            create_integration(session, Platform.TIKTOK, settings={"pixel_code": "C4PAUSED"})  # no token: paused
    after = samples(api)
    paused = value(after, "trailmark_integrations_paused", platform="tiktok")
    assert paused - value(before, "trailmark_integrations_paused", platform="tiktok") == 2
    assert not any("tenant" in label for _, labels in after for label, _ in labels)


def test_task_runs_failures_and_durations_are_counted_per_queue(
    api: LiveServer, queue_worker: subprocess.Popen[bytes], make_tenant: Callable[..., TenantHandle]
) -> None:
    from workers.app import celery_app

    task = "trailmark.system.ping"
    labels = {"queue": TEST_QUEUE, "task": task}
    before = samples(api)
    celery_app.send_task(task, args=[str(make_tenant("Pinged").tenant_id), "metrics"], queue=TEST_QUEUE)
    celery_app.send_task(task, args=[str(uuid.uuid4()), "no such tenant"], queue=TEST_QUEUE)

    def counted() -> Samples | None:
        now = samples(api)
        runs = value(now, "trailmark_task_runs_total", **labels) - value(before, "trailmark_task_runs_total", **labels)
        return now if runs >= 2 else None

    after = wait_until(counted, 60, "two task runs counted")
    assert (
        value(after, "trailmark_task_runs_total", **labels) - value(before, "trailmark_task_runs_total", **labels) == 2
    )
    failures = value(after, "trailmark_task_failures_total", **labels) - value(
        before, "trailmark_task_failures_total", **labels
    )
    assert failures == 1  # the unknown tenant's; the other succeeded
    durations = value(after, "trailmark_task_duration_seconds_count", **labels) - value(
        before, "trailmark_task_duration_seconds_count", **labels
    )
    assert durations == 2
    assert value(after, "trailmark_db_pool_connections_capacity", role="worker") > 0


def test_a_scrape_while_redis_is_down_answers_200_and_says_so(
    private_redis: tuple[str, Callable[[], None], Callable[[], None]],
) -> None:
    url, down, _ = private_redis
    api = start_api_server(TRAILMARK_REDIS_URL=url, TRAILMARK_METRICS_TOKEN=TOKEN)
    try:
        assert value(samples(api), "trailmark_up", component="redis") == 1
        down()
        during = samples(api)
        assert value(during, "trailmark_up", component="redis") == 0
        assert value(during, "trailmark_up", component="database") == 1
        assert not any(name.startswith("trailmark_ingest_backlog_entries") for name, _ in during)  # unknown, not 0
        assert ("trailmark_outbox_messages", frozenset()) in during
    finally:
        api.stop()


def test_the_metrics_token_must_be_long_enough_to_resist_guessing() -> None:
    base = {"TRAILMARK_DATABASE_URL": "", "TRAILMARK_REDIS_URL": ""}
    assert Settings.from_env({**base, "TRAILMARK_METRICS_TOKEN": TOKEN}).metrics_token == TOKEN
    assert Settings.from_env(base).metrics_token is None
    for weak in ("short", "a b" * 20, "é" * 40):
        with pytest.raises(SettingsError, match="TRAILMARK_METRICS_TOKEN"):
            Settings.from_env({**base, "TRAILMARK_METRICS_TOKEN": weak})


def test_a_new_run_starts_its_counts_from_an_emptied_folder(tmp_path: Path) -> None:
    from tenants.metrics import prepare_directory

    (tmp_path / "counter_4242.db").write_bytes(b"left by the last run")
    (tmp_path / "notes.txt").write_text("not ours")
    prepare_directory(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
