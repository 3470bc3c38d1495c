"""Driving the ingest pipeline as browsers and operators do: many visitors sending their page views in order
through the real collect endpoint (retrying what was refused, as the tracker does), ingest workers as their own
processes, and checks of what was stored."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import psutil
from sqlalchemy import text

from tenants.isolation import tenant_session
from tenants.tracking.buffer import GROUP, shards
from tests.conftest import REPO, child_env, log_file, wait_until

ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
HEADERS = {"Origin": ORIGIN, "User-Agent": BROWSER, "Content-Type": "text/plain;charset=UTF-8"}


def start_ingest_worker(**env: str) -> subprocess.Popen[bytes]:
    """An ingest worker as an operator runs one: the ``ingest`` queue, one process."""
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker", "--queues", "ingest", "--concurrency", "1"],
        cwd=REPO,
        env=child_env(**env),
        stdout=log_file("ingest-worker"),
        stderr=subprocess.STDOUT,
    )


def process_ids(process: subprocess.Popen[bytes]) -> set[int]:
    """The worker and its pool processes (each a consumer named ``host-pid``)."""
    try:
        parent = psutil.Process(process.pid)
        return {parent.pid, *(child.pid for child in parent.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def kill_dash_nine(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its pool at once: no warm shutdown, no acknowledgement, no lease given back."""
    for pid in process_ids(process):
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    process.wait(10)


def is_storing(worker: subprocess.Popen[bytes], client: Any, shard_count: int) -> bool:
    """Whether ``worker`` holds a shard and has read entries of it that it has not acknowledged: the moment to kill
    it to see its batches taken over."""
    pids = process_ids(worker)
    pipe = client.pipeline(transaction=False)
    for each in shards(shard_count):
        pipe.get(each.lease)
    holders: list[Any] = pipe.execute()
    for each, holder in zip(shards(shard_count), holders, strict=True):
        if holder and int(holder.rsplit(b"-", 1)[1]) in pids:
            pending: Any = client.xpending(each.stream, GROUP)
            return any(int(consumer["name"].rsplit(b"-", 1)[1]) in pids for consumer in pending["consumers"])
    return False


HOLD_SECONDS = 120


@dataclass
class Load:
    """Visitors of one site, each sending ``pages`` batches one after the other (the next once the previous was
    acknowledged with 202), from ``threads`` threads. A refused batch (503, a connection error) is sent again
    after a pause, as the tracker does; only 202s count as acknowledged."""

    base_url: str
    site_key: str
    visitors: int
    pages: int
    hits_per_batch: int = 1
    threads: int = 4
    hold_at: int | None = None
    """Once this many hits are acknowledged, send nothing more until :meth:`release` (so faults meet a load that
    cannot have ended yet, however fast the machine)."""
    acknowledged: int = 0
    refused: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    """Every answer but 202, by status (0: no answer)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Load:
        for index in range(self.threads):
            thread = threading.Thread(target=self._send, args=(range(index, self.visitors, self.threads),), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def release(self) -> None:
        self._released.set()

    def wait(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        assert not any(thread.is_alive() for thread in self._workers), "the load did not finish"

    def _send(self, visitors: range) -> None:
        start_ms = int(time.time() * 1000) - 3_600_000
        with httpx.Client(base_url=self.base_url, headers=HEADERS, timeout=10) as http:
            tokens: dict[int, str | None] = dict.fromkeys(visitors)
            for page in range(self.pages):  # page by page, so every visitor is in flight for the whole load
                for visitor in visitors:
                    hits = [
                        {
                            "hit_id": str(uuid.uuid4()),
                            # Strictly increasing per visitor: the order it was sent in.
                            "ts": start_ms + (page * self.hits_per_batch + n) * 10,
                            "url": f"{ORIGIN}/p{page}?utm_source=test&utm_campaign=p{page}",
                            "path": f"/p{page}",
                            "utm": {"source": "test", "campaign": f"p{page}"},
                        }
                        for n in range(self.hits_per_batch)
                    ]
                    tokens[visitor] = self._deliver(http, {"v": 1, "token": tokens[visitor], "hits": hits})

    def _deliver(self, http: httpx.Client, body: dict[str, Any]) -> str | None:
        content = json.dumps(body).encode()
        if self.hold_at is not None and self.acknowledged >= self.hold_at:
            self._released.wait(HOLD_SECONDS)  # bounded: a test that failed before releasing must not hang
        while not self._stop.is_set():
            try:
                response = http.post(f"/collect/{self.site_key}", content=content)
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            if status == 202:
                with self._lock:
                    self.acknowledged += len(body["hits"])
                return str(response.json()["token"]) if response.content else body["token"]
            with self._lock:
                self.refused += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1
            assert status in (0, 503), f"collect answered {status}: {response.text}"
            time.sleep(0.2)
        return None


def stored_count(tenant_id: UUID) -> tuple[int, int]:
    """The tenant's visits and distinct hit ids (a hit stored twice shows as a difference)."""
    with tenant_session(tenant_id) as session:
        row = session.execute(text("SELECT count(*), count(DISTINCT hit_id) FROM visits")).one()
    return int(row[0]), int(row[1])


def wait_all_stored(tenant_id: UUID, sent: int, timeout: float, what: str) -> None:
    """Until every acknowledged hit is stored; fails at once if a hit is stored twice or more than were sent."""

    def all_stored() -> bool:
        stored, distinct = stored_count(tenant_id)
        assert stored == distinct, f"{stored - distinct} hits stored twice"
        assert stored <= sent
        return stored == sent

    wait_until(all_stored, timeout, what, interval=0.2)


def visitors_out_of_order(tenant_id: UUID) -> list[str]:
    """Visitors whose visits were stored out of the order they were sent in (a later page in an earlier
    transaction), or whose first touch is not their first page."""
    with tenant_session(tenant_id) as session:
        rows = session.execute(
            text(
                """SELECT v.id, v.first_touch->'utm'->>'campaign',
                       array_agg(x.xmin::text::bigint ORDER BY x.occurred_at, x.hit_id)
                   FROM visitors v JOIN visits x ON x.visitor_id = v.id
                   GROUP BY v.id, v.first_touch"""
            )
        ).all()
    return [
        str(visitor_id)
        for visitor_id, first_campaign, transactions in rows
        if first_campaign != "p0" or transactions != sorted(transactions)
    ]
