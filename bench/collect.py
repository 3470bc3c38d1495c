"""Collect benchmark (``make bench-collect``): the real collect pipeline against a bare Litestar endpoint.

In one run it

1. creates a fresh test database and Redis database (``tests/services.py``), migrates, and registers one
   tenant with one site;
2. starts the real API (uvicorn, ``--api-workers`` processes), ``--ingest-workers`` ingest workers (one process
   each) over ``--shards`` ingest streams, and beat; with ``--cluster``, the streams live on a 3-master Redis
   Cluster the bench starts (``tests/support/redis_cluster.py``), the broker on the test Redis;
3. lands ``WARMUP_VISITORS`` browsers (a first hit without a token each) to get genuine visitor tokens;
4. loads a bare Litestar endpoint that parses the same body and answers 204, served by uvicorn with the
   same settings as the API (the baseline runs first, alone);
5. loads collect with the identical wrk script, then times how long ingest takes to store every hit.

Load: wrk, ``--connections`` keep-alive connections for ``--seconds``, one page-view hit per request, each
with a fresh ``hit_id``; most carry one of the warm-up tokens (a returning browser), one in
``NEW_VISITOR_EVERY`` carries none (a browser landing for the first time).

Accounting is exact: wrk would abandon the requests in flight when its time is up, and the server may
store those hits without wrk counting their 202. So the script stops starting requests at the deadline
and wrk runs ``TAIL_SECONDS`` longer for the last answers to arrive. Throughput is therefore computed from
the script's own counters (successful answers over the time between the first request and the last
answer), not from wrk's "Requests/sec", which would include the idle tail; p99 comes from wrk's
``--latency`` distribution. ``sent`` counts every 202 of the run (warm-up included), ``stored`` the
tenant's rows in ``visits``, and ``drain_s`` the seconds from the last answer until both are equal.

The line before the last adds ``stored_rps``: the load's hits over the seconds from its first request until all
were stored (the ingest workers' throughput whenever they, not collect, are the bottleneck).

The last line of stdout::

    collect_rps=… bare_rps=… ratio=… p99_ms=… sent=… stored=… drain_s=…

The exit status is non-zero when ``stored != sent`` or when any request failed (a non-2xx answer, a
socket error, or a request left unanswered); the line before the last says which.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import string
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, post

REPO = Path(__file__).resolve().parents[1]
# tests/ and bench/ are not installed packages: import them from the checkout, however this file runs.
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    BenchError,
    LoadBench,
    ensure_wrk,
    load_bench_main,
    load_bench_parser,
    log,
    lua_string,
    owner_connection,
    trailmark_command,
)

ORIGIN = "https://shop.example"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
CONTENT_TYPE = "text/plain;charset=UTF-8"
"""What the tracker's sendBeacon sends: a simple request, no CORS preflight."""
WARMUP_VISITORS = 1000
NEW_VISITOR_EVERY = 20
TAIL_SECONDS = 3
"""wrk keeps running this long after the load window so that every request started gets its answer;
shorter than uvicorn's 5 s keep-alive timeout, so no idle connection is closed under wrk (a read error)."""
DRAIN_TIMEOUT_SECONDS = 120
POLL_SECONDS = 0.05


# --- the baseline --------------------------------------------------------------------------------


def create_bare_app() -> Litestar:
    """What any Litestar endpoint pays to take this body, parse it and answer, with nothing else."""

    @post("/collect/{site_key:str}", status_code=204)
    async def bare_collect(request: Request[Any, Any, Any]) -> None:
        msgspec.json.decode(await request.body())

    return Litestar(route_handlers=[bare_collect])


# --- the load ------------------------------------------------------------------------------------


def page_view(token: Any, hit_id: Any, ts: Any) -> dict[str, Any]:
    """A collect body with one landing page view from a Google Ads click: the common case."""
    return {
        "v": 1,
        "token": token,
        "hits": [
            {
                "hit_id": hit_id,
                "ts": ts,
                "url": "https://shop.example/pricing?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=abc",
                "path": "/pricing",
                "title": "Pricing",
                "referrer": "https://www.google.com/",
                "utm": {"source": "google", "medium": "cpc", "campaign": "spring"},
                "click_ids": {"gclid": "abc"},
                "cookies": {"_fbp": "fb.1.1700000000000.123"},
                "partner_code": None,
                "lang": "en-US",
                "screen": "1920x1080",
            }
        ],
    }


def _body_pieces() -> list[str]:
    """The JSON body cut where the script fills in the token, the hit id and the timestamp."""
    text = json.dumps(page_view("__TOKEN__", "__HIT_ID__", "__TS__"), separators=(",", ":"))
    head, rest = text.split('"__TOKEN__"')
    middle, rest = rest.split("__HIT_ID__")
    before_ts, tail = rest.split('"__TS__"')
    return [head, middle, before_ts, tail]


LUA_SCRIPT = string.Template(
    r"""-- Written by bench/collect.py: one page-view hit per request, each with a fresh hit_id.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock_buffer = ffi.new("bench_timespec")

-- CLOCK_MONOTONIC (1) is the clock of Python's time.monotonic(): the driver compares these stamps.
local function monotonic()
  ffi.C.clock_gettime(1, clock_buffer)
  return tonumber(clock_buffer.tv_sec) + tonumber(clock_buffer.tv_nsec) * 1e-9
end

local function epoch_ms()
  ffi.C.clock_gettime(0, clock_buffer)
  return tonumber(clock_buffer.tv_sec) * 1000 + math.floor(tonumber(clock_buffer.tv_nsec) / 1000000)
end

local LOAD_SECONDS = $load_seconds
local RUN_ID = "$run_id"
local NEW_VISITOR_EVERY = $new_visitor_every
local TOKENS = {
$tokens
}
local HEAD, MIDDLE, BEFORE_TS, TAIL = $body_pieces

wrk.method = "POST"
wrk.headers["Content-Type"] = "$content_type"
wrk.headers["Origin"] = "$origin"
wrk.headers["User-Agent"] = "$user_agent"

local threads = {}
local shared_deadline = nil

function setup(thread)
  -- One deadline for every thread; after it no request starts, so each one sent gets its answer.
  -- (Each thread runs this file in a Lua state of its own: `deadline` arrives there as a global.)
  shared_deadline = shared_deadline or monotonic() + LOAD_SECONDS
  table.insert(threads, thread)
  thread:set("thread_index", #threads)
  thread:set("deadline", shared_deadline)
end

function init(args)
  -- Globals of this thread's own Lua state, read back by done() through thread:get().
  counter, sent, answered, first_at, last_at = 0, 0, 0, 0, 0
  statuses = {}
end

-- wrk asks before each request it sends (and only then: it also calls request() once to check the
-- script, so requests are counted here).
function delay()
  local now = monotonic()
  if now < deadline then
    if sent == 0 then
      first_at = now
    end
    sent = sent + 1
    return 0
  end
  return 3600000
end

function request()
  counter = counter + 1
  local token = "null"  -- a browser landing for the first time
  if counter % NEW_VISITOR_EVERY ~= 0 then
    token = TOKENS[(counter + thread_index * 7919) % #TOKENS + 1]
  end
  -- Unique within the run by thread and counter, across runs by RUN_ID.
  local hit_id = string.format("%s-%04x-4000-8000-%012x", RUN_ID, thread_index, counter)
  local body = string.format("%s%s%s%s%s%d%s", HEAD, token, MIDDLE, hit_id, BEFORE_TS, epoch_ms(), TAIL)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  last_at = monotonic()
end

function done(summary, latency, requests)
  local total_sent, total_answered, first, last = 0, 0, math.huge, 0
  local by_status = {}
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_answered = total_answered + thread:get("answered")
    local thread_first = thread:get("first_at")
    if thread_first > 0 then
      first = math.min(first, thread_first)
    end
    last = math.max(last, thread:get("last_at"))
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  io.write(string.format("bench: sent=%d answered=%d first_at=%.6f last_at=%.6f\n",
    total_sent, total_answered, first, last))
  for status, count in pairs(by_status) do
    io.write(string.format("bench: status %d %d\n", status, count))
  end
  local errors = summary.errors
  io.write(string.format("bench: socket_errors connect=%d read=%d write=%d\n",
    errors.connect, errors.read, errors.write))
end
"""
)


def write_lua_script(path: Path, seconds: int, tokens: list[str]) -> None:
    path.write_text(
        LUA_SCRIPT.substitute(
            load_seconds=seconds,
            run_id=secrets.token_hex(4),
            new_visitor_every=NEW_VISITOR_EVERY,
            tokens=",\n".join(lua_string(json.dumps(token)) for token in tokens),
            body_pieces=", ".join(lua_string(piece) for piece in _body_pieces()),
            content_type=CONTENT_TYPE,
            origin=ORIGIN,
            user_agent=USER_AGENT,
        )
    )


@dataclass
class LoadResult:
    label: str
    sent: int
    answered: int
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    first_at: float
    last_at: float
    """When the last answer arrived (time.monotonic()): the end of the load."""
    p99_ms: float
    ok_status: range
    server_cpu_s: float = 0.0
    """CPU seconds the server's processes used meanwhile: per request, a figure neighbours on the machine
    barely move, unlike requests per second."""

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if status in self.ok_status)

    @property
    def rps(self) -> float:
        return self.ok / (self.last_at - self.first_at) if self.last_at > self.first_at else 0.0

    @property
    def errors(self) -> int:
        """Every request without a successful answer: other statuses, socket errors, no answer at all."""
        unanswered = self.sent - self.answered
        return self.answered - self.ok + sum(self.socket_errors.values()) + unanswered

    def describe(self) -> str:
        statuses = ",".join(f"{status}:{count}" for status, count in sorted(self.statuses.items()))
        sockets = ",".join(f"{kind}:{count}" for kind, count in self.socket_errors.items() if count)
        return (
            f"{self.label}: {self.rps:.0f} ok/s, p99 {self.p99_ms:.1f} ms, sent {self.sent}, "
            f"answered {self.answered} ({statuses}), socket errors {sockets or 'none'}, "
            f"server CPU {self.server_cpu_s / max(self.answered, 1) * 1e6:.0f} us a request"
        )


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk_output(label: str, output: str, ok_status: range) -> LoadResult:
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    totals = re.search(r"^bench: sent=(\d+) answered=(\d+) first_at=(\S+) last_at=(\S+)$", output, re.MULTILINE)
    sockets = re.search(r"^bench: socket_errors (.*)$", output, re.MULTILINE)
    if p99 is None or totals is None or sockets is None:
        raise BenchError(f"{label}: unexpected wrk output:\n{output}")
    statuses = {
        int(status): int(count) for status, count in re.findall(r"^bench: status (\d+) (\d+)$", output, re.MULTILINE)
    }
    return LoadResult(
        label=label,
        sent=int(totals[1]),
        answered=int(totals[2]),
        statuses=statuses,
        socket_errors={kind: int(count) for kind, count in re.findall(r"(\w+)=(\d+)", sockets[1])},
        first_at=float(totals[3]),
        last_at=float(totals[4]),
        p99_ms=float(p99[1]) * _UNIT_MS[p99[2]],
        ok_status=ok_status,
    )


# --- the system under test -----------------------------------------------------------------------


class StoredVisits:
    """Counts the tenant's visits over a connection of its own, remembering when it saw what."""

    def __init__(self, owner_url: str, tenant_id: uuid.UUID) -> None:
        self.tenant_id = tenant_id
        self.connection = owner_connection(owner_url)
        self.connection.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant_id),))
        self.samples: list[tuple[float, int]] = []

    def sample(self) -> tuple[float, int]:
        # Stamped before the query: the count is of a snapshot taken no earlier than this.
        at = time.monotonic()
        row = self.connection.execute("SELECT count(*) FROM visits WHERE tenant_id = %s", (self.tenant_id,)).fetchone()
        stored = int(row[0]) if row else 0
        self.samples.append((at, stored))
        return at, stored

    def close(self) -> None:
        self.connection.close()


class Bench(LoadBench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.stored_visits: StoredVisits | None = None
        self.cluster: Any = None

    def run(self) -> int:
        wrk = ensure_wrk()
        env = self.start_services()
        env["TRAILMARK_INGEST_SHARDS"] = str(self.args.shards)
        if self.args.cluster:
            from tests.support.redis_cluster import LocalCluster, missing_cluster_binaries

            if missing := missing_cluster_binaries():
                raise BenchError(missing)
            self.cluster = LocalCluster(masters=3)
            env["TRAILMARK_INGEST_REDIS_URL"] = self.cluster.url
            log(f"ingest streams on the Redis Cluster {self.cluster.url}")
        os.environ.update(env)
        tenant_id, site_key = self.create_site()
        self.stored_visits = StoredVisits(self.services.owner_url, tenant_id)

        from tenants.embedded import free_port

        bare_port = free_port()
        workers = str(self.args.api_workers)
        api_url = self.start_api(env, "--workers", workers)
        for index in range(self.args.ingest_workers):
            command = trailmark_command("worker", "--queues", "ingest", "--concurrency", "1")
            self.start(f"worker-{index}", command, env)
        self.start("beat", trailmark_command("beat"), env)
        collect_path = f"/collect/{site_key}"

        log(f"landing {WARMUP_VISITORS} browsers without a token to get their visitor tokens")
        tokens = land_browsers(api_url + collect_path, WARMUP_VISITORS)
        warmup_sent = len(tokens)
        drain_s, stored = self.wait_stored(warmup_sent, since=time.monotonic())
        if stored != warmup_sent:
            raise BenchError(f"the warm-up was not stored: {stored} of {warmup_sent} after {drain_s:.1f} s")
        log(f"warm-up stored in {drain_s:.1f} s; the ingest workers run")

        script = self.workdir / "collect.lua"
        write_lua_script(script, self.args.seconds, tokens)

        # The baseline first, alone: the API, worker and beat are idle meanwhile.
        self.start(
            "bare",
            [sys.executable, "-m", "bench.collect", "--serve-bare", str(bare_port), "--api-workers", workers],
            env,
        )
        bare_url = f"http://127.0.0.1:{bare_port}{collect_path}"
        self.wait_until_answers("bare", lambda: _post_status(bare_url, page_view(None, str(uuid.uuid4()), 0)) == 204)
        bare = self.load(wrk, script, bare_url, "bare", range(200, 300), server="bare")
        self.stop("bare")

        collect = self.load(wrk, script, api_url + collect_path, "collect", range(202, 203), server="api", watch=True)
        sent = warmup_sent + collect.ok
        log(f"load over; waiting for ingest to store {sent} hits ({warmup_sent} warm-up + {collect.ok} load)")
        drain_s, stored = self.wait_stored(sent, since=collect.last_at)
        log(f"stored {stored} of {sent} in {drain_s:.1f} s after the last answer")
        stored = self.recount_when_stream_empty(stored)

        stored_rps = collect.ok / (collect.last_at + drain_s - collect.first_at) if stored == sent else 0.0
        failures = []
        if stored != sent:
            failures.append(f"stored {stored} != sent {sent}")
        for result in (bare, collect):
            if result.errors:
                failures.append(f"{result.label} had {result.errors} failed requests")
        ratio = collect.rps / bare.rps if bare.rps else 0.0
        print(
            f"collect_errors={collect.errors} bare_errors={bare.errors} "
            f"warmup_sent={warmup_sent} load_sent={collect.ok} api_workers={workers} "
            f"shards={self.args.shards} ingest_workers={self.args.ingest_workers} "
            f"cluster={'yes' if self.cluster else 'no'} stored_rps={stored_rps:.0f}"
        )
        print(
            f"collect_rps={collect.rps:.0f} bare_rps={bare.rps:.0f} ratio={ratio:.2f} "
            f"p99_ms={collect.p99_ms:.1f} sent={sent} stored={stored} drain_s={drain_s:.1f}"
        )
        if failures:
            log("FAILED: " + "; ".join(failures))
            return 1
        return 0

    def create_site(self) -> tuple[uuid.UUID, str]:
        from tenants.accounts.service import signup
        from tenants.isolation import dispose_engine, tenant_session
        from tenants.tracking.sites import create_site

        tenant = signup(name="Bench", owner_email="bench@example.com", password=secrets.token_urlsafe(18)).tenant
        with tenant_session(tenant.id) as session:
            site_key = create_site(session, name="Shop", allowed_origins=[ORIGIN]).site_key
        dispose_engine()  # this process only counts visits from here on, over its own connection
        return tenant.id, site_key

    def load(
        self, wrk: str, script: Path, url: str, label: str, ok_status: range, *, server: str, watch: bool = False
    ) -> LoadResult:
        """One wrk run; with ``watch``, count stored visits from just before the deadline, so that a
        drain ending during wrk's tail is timed from the samples."""
        seconds = self.args.seconds
        wrk_seconds = seconds + TAIL_SECONDS
        command = [
            wrk,
            f"-t{self.args.threads}",
            f"-c{self.args.connections}",
            f"-d{wrk_seconds}s",
            # Idle connections in the tail would count as timeouts: lost answers show as sent > answered.
            f"--timeout={wrk_seconds + 60}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        log(f"{label}: {self.args.connections} connections for {seconds} s (+{TAIL_SECONDS} s for the last answers)")
        output_path = self.workdir / f"wrk-{label}.txt"
        cpu_before = self.cpu_seconds(server)
        with output_path.open("w") as output:
            started = time.monotonic()
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
            try:
                while process.poll() is None:
                    if watch and self.stored_visits and time.monotonic() > started + seconds - 1:
                        self.stored_visits.sample()
                    time.sleep(POLL_SECONDS)
            finally:
                if process.poll() is None:
                    process.terminate()
                    process.wait()
        text = output_path.read_text()
        print(text.rstrip(), file=sys.stderr)
        if process.returncode:
            raise BenchError(f"{label}: wrk exited with {process.returncode}")
        result = parse_wrk_output(label, text, ok_status)
        result.server_cpu_s = self.cpu_seconds(server) - cpu_before
        log(result.describe())
        return result

    def wait_stored(self, sent: int, *, since: float) -> tuple[float, int]:
        """Seconds from ``since`` until ``sent`` visits are stored (or the give-up time), and the count."""
        assert self.stored_visits is not None
        for at, stored in self.stored_visits.samples:
            if at >= since and stored >= sent:
                return at - since, stored
        while True:
            at, stored = self.stored_visits.sample()
            if stored >= sent or at - since > DRAIN_TIMEOUT_SECONDS:
                return at - since, stored
            time.sleep(POLL_SECONDS)

    def recount_when_stream_empty(self, stored: int, timeout: float = 10) -> int:
        """Count again once nothing waits in the ingest stream: hits stored beyond ``sent`` (which exact
        accounting rules out) would show up only then."""
        from tenants.redis_store import sync_redis_client
        from tenants.settings import get_settings
        from tenants.tracking.buffer import backlog as stream_backlog
        from tenants.tracking.buffer import dead_letter_count

        assert self.stored_visits is not None
        client = sync_redis_client(get_settings().ingest_redis or "")
        shards = self.args.shards
        try:
            deadline = time.monotonic() + timeout
            while stream_backlog(client, shard_count=shards) and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
            backlog, dead = stream_backlog(client, shard_count=shards), dead_letter_count(client, shard_count=shards)
        finally:
            client.close()
        _, recount = self.stored_visits.sample()
        if backlog or dead or recount != stored:
            log(f"after the drain: {recount} stored, {backlog} entries still queued, {dead} dead-lettered")
        return recount

    def close(self) -> None:
        if self.stored_visits is not None:
            self.stored_visits.close()
        super().close()
        if self.cluster is not None:
            self.cluster.close()


def land_browsers(url: str, count: int) -> list[str]:
    """First visits without a token, as browsers landing; returns the visitor tokens they were given."""
    import httpx

    tokens = []
    headers = {"Origin": ORIGIN, "User-Agent": USER_AGENT, "Content-Type": CONTENT_TYPE}
    with httpx.Client(headers=headers, timeout=10) as client:
        for _ in range(count):
            body = json.dumps(page_view(None, str(uuid.uuid4()), int(time.time() * 1000)))
            response = client.post(url, content=body)
            if response.status_code != 202:
                raise BenchError(f"collect answered {response.status_code}: {response.text[:500]}")
            tokens.append(response.json()["token"])
    return tokens


def _post_status(url: str, body: dict[str, Any]) -> int | None:
    import httpx

    try:
        return httpx.post(url, content=json.dumps(body), headers={"Content-Type": CONTENT_TYPE}, timeout=1).status_code
    except httpx.HTTPError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = load_bench_parser(__doc__ or "", seconds=30)
    parser.add_argument("--shards", type=int, default=1, help="ingest streams (TRAILMARK_INGEST_SHARDS, default 1)")
    parser.add_argument("--ingest-workers", type=int, default=1, help="ingest worker processes (default 1)")
    parser.add_argument("--cluster", action="store_true", help="the ingest streams on a 3-master Redis Cluster")
    args = parser.parse_args(argv)
    if not args.serve_bare and (args.shards < 1 or args.ingest_workers < 1):
        log("--shards and --ingest-workers must be at least 1")
        return 2
    return load_bench_main(args, "bench.collect:create_bare_app", Bench)


if __name__ == "__main__":
    sys.exit(main())
