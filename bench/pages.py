"""Hosted-page benchmark (``make bench-pages``): a personalized page against a bare Litestar endpoint.

In one run it

1. creates a fresh test database and Redis database (``tests/services.py``), migrates, and registers one
   tenant with a page of ten blocks (:func:`blocks`: HTML for each level with merge fields, links, a form),
   and one visitor identified by a form submission (its token linked to a contact);
2. starts the real API (``python -m api.cli api``, ``--api-workers`` processes) and renders the page
   once for that visitor: the answer must be the identified view (the first name, no anonymous or
   logged-in block, no new visitor cookie), and two renders must be the same bytes;
3. loads a bare Litestar endpoint that answers those bytes as ``text/html``, served by uvicorn with the
   same settings as the API (the baseline runs first, alone, and is stopped before the API is loaded);
4. loads ``/s/{tenant_slug}/{page_slug}`` with the visitor's cookie, the identical wrk script.

Load: wrk, ``--connections`` keep-alive connections for ``--seconds``, after ``--warmup-seconds`` of the
same load that is not counted (it fills connection pools). Every request is a GET with the header
``Cookie: tm_vid=<token>`` and no ``Accept-Encoding`` (neither side compresses). The script checks each
answer: a 200 whose body holds the identified greeting counts; anything else (another status, another
body, a socket error or a timeout) is a failure. Throughput is counted answers over wrk's measured
duration; p99 is wrk's latency distribution of the page run. The line before the last also gives the
CPU each server's processes spent per answer (``page_cpu_us``, ``bare_cpu_us``, and ``cpu_ratio``, their
ratio): on a machine shared with other work, throughput moves with the neighbours and CPU per answer
hardly does.

The last line of stdout::

    page_rps=… bare_rps=… ratio=… p99_ms=…

Target: ``ratio`` ≥ 0.25 (reported on stderr, not enforced). The exit status is non-zero when the page
does not render the identified view or any request of either run failed.
"""

from __future__ import annotations

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

from litestar import Litestar, MediaType, Response, get

REPO = Path(__file__).resolve().parents[1]
# tests/ and bench/ are not installed packages: import them from the checkout, however this file runs.
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    BenchError,
    LoadBench,
    ensure_wrk,
    get_status,
    load_bench_main,
    load_bench_parser,
    log,
    lua_string,
)

PAGE_SLUG = "welcome"
FIRST_NAME = "Monica"
GREETING = f"Hello {FIRST_NAME}, welcome back"
"""In the identified block only: every counted answer of both runs must contain it."""
RATIO_TARGET = 0.25
BARE_BODY_ENV = "TRAILMARK_BENCH_BARE_BODY"
"""The file holding the captured page, for the bare server's processes."""
HEADERS = {"Cache-Control": "no-store"}
"""What the hosted page answers with besides its body; the baseline answers the same."""


def _unstamped(body: bytes) -> bytes:
    """The page without its forms' shown-at stamps (milliseconds, so two renders rarely share them)."""
    return re.sub(rb'name="tm_started" value="\d+"', b'name="tm_started" value=""', body)


def blocks(form_id: uuid.UUID) -> list[dict[str, Any]]:
    """Ten blocks, as a tenant would build a landing page: one per level, some for every level, merge
    fields in most; the identified visitor sees seven of them."""
    return [
        {
            "kind": "html",
            "html": "<h1>Welcome!</h1><p>Tell us who you are and we will tailor this page.</p>",
            "visible_to": ["anonymous"],
        },
        {
            "kind": "html",
            "html": "<h1>Hello {{contact.first_name|there}}, welcome back</h1>"
            "<p>Here is what is new since your last visit, {{contact.first_name|friend}}.</p>",
            "visible_to": ["identified", "logged_in"],
        },
        {
            "kind": "html",
            "html": "<h2>Why teams pick us</h2><ul><li>Attribution across every device</li>"
            "<li>Forms that identify without cookies walls</li><li>Pages that know their reader</li></ul>",
            "visible_to": ["anonymous", "identified", "logged_in"],
        },
        {
            "kind": "link",
            "url": "/pricing",
            "text": "See the plans for you, {{contact.first_name|friend}}",
            "visible_to": ["anonymous", "identified", "logged_in"],
        },
        {
            "kind": "html",
            "html": "<p>Your account: {{contact.email|}} ({{contact.first_name|}} {{contact.last_name|}})</p>",
            "visible_to": ["logged_in"],
        },
        {
            "kind": "form",
            "form_id": str(form_id),
            "visible_to": ["anonymous", "identified"],
        },
        {
            "kind": "html",
            "html": "<blockquote><p>“We doubled our attributed revenue in a quarter.”</p>"
            "<p>— a customer, {{contact.first_name|}} might know them</p></blockquote>",
            "visible_to": ["identified", "logged_in"],
        },
        {
            "kind": "html",
            "html": "<h2>Members' corner</h2><p>Your downloads, {{contact.first_name|member}}.</p>",
            "visible_to": ["logged_in"],
        },
        {
            "kind": "link",
            "url": "mailto:sales@shop.example",
            "text": "Talk to sales",
            "visible_to": ["identified", "logged_in"],
        },
        {
            "kind": "html",
            "html": "<footer><p>© Shop. <a href='https://shop.example/privacy'>Privacy</a></p></footer>",
            "visible_to": ["anonymous", "identified", "logged_in"],
        },
    ]


# --- the baseline --------------------------------------------------------------------------------


def create_bare_app() -> Litestar:
    """What any Litestar endpoint pays to answer these bytes as HTML, with nothing else."""
    body = Path(os.environ[BARE_BODY_ENV]).read_bytes()

    @get("/s/{tenant_slug:str}/{page_slug:str}", media_type=MediaType.HTML)
    async def bare_page() -> Response[bytes]:
        return Response(body, media_type=MediaType.HTML, headers=HEADERS)

    return Litestar(route_handlers=[bare_page])


# --- the load ------------------------------------------------------------------------------------


LUA_SCRIPT = string.Template(
    r"""-- Written by bench/pages.py: the identified visitor's GET, every answer checked.
local GREETING = $greeting

wrk.method = "GET"
wrk.headers["Cookie"] = $cookie
wrk.headers["User-Agent"] = "trailmark-bench"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  -- Globals of this thread's own Lua state, read back by done() through thread:get().
  counted, wrong = 0, 0
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 and string.find(body, GREETING, 1, true) then
    counted = counted + 1
  else
    wrong = wrong + 1
  end
end

function done(summary, latency, requests)
  local total_counted, total_wrong, by_status = 0, 0, {}
  for _, thread in ipairs(threads) do
    total_counted = total_counted + thread:get("counted")
    total_wrong = total_wrong + thread:get("wrong")
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local errors = summary.errors
  io.write(string.format("bench: counted=%d wrong=%d duration_us=%d p50_us=%d p99_us=%d\n",
    total_counted, total_wrong, summary.duration, latency:percentile(50), latency:percentile(99)))
  for status, count in pairs(by_status) do
    io.write(string.format("bench: status %d %d\n", status, count))
  end
  io.write(string.format("bench: socket_errors connect=%d read=%d write=%d timeout=%d\n",
    errors.connect, errors.read, errors.write, errors.timeout))
end
"""
)


def write_lua_script(path: Path, visitor_token: str) -> None:
    path.write_text(LUA_SCRIPT.substitute(greeting=lua_string(GREETING), cookie=lua_string(f"tm_vid={visitor_token}")))


@dataclass
class LoadResult:
    label: str
    counted: int
    wrong: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    server_cpu_s: float = 0.0
    """CPU seconds the server's processes used during the measured run (user + system)."""

    @property
    def rps(self) -> float:
        return self.counted / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        """Server CPU per counted answer: unlike throughput, barely moved by other load on the machine."""
        return self.server_cpu_s / self.counted * 1e6 if self.counted else 0.0

    @property
    def errors(self) -> int:
        """Answers that were not the identified page, and requests without an answer."""
        return self.wrong + sum(self.socket_errors.values())

    def describe(self) -> str:
        statuses = ",".join(f"{status}:{count}" for status, count in sorted(self.statuses.items()))
        sockets = ",".join(f"{kind}:{count}" for kind, count in self.socket_errors.items() if count)
        return (
            f"{self.label}: {self.rps:.0f} pages/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"server CPU {self.cpu_us:.0f} µs/page, {self.counted} counted over {self.duration_s:.1f} s ({statuses}), "
            f"{self.wrong} wrong, socket errors {sockets or 'none'}"
        )


def parse_wrk_output(label: str, output: str) -> LoadResult:
    totals = re.search(
        r"^bench: counted=(\d+) wrong=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+)$", output, re.MULTILINE
    )
    sockets = re.search(r"^bench: socket_errors (.*)$", output, re.MULTILINE)
    if totals is None or sockets is None:
        raise BenchError(f"{label}: unexpected wrk output:\n{output}")
    return LoadResult(
        label=label,
        counted=int(totals[1]),
        wrong=int(totals[2]),
        duration_s=int(totals[3]) / 1e6,
        p50_ms=int(totals[4]) / 1000,
        p99_ms=int(totals[5]) / 1000,
        statuses={
            int(status): int(count)
            for status, count in re.findall(r"^bench: status (\d+) (\d+)$", output, re.MULTILINE)
        },
        socket_errors={kind: int(count) for kind, count in re.findall(r"(\w+)=(\d+)", sockets[1])},
    )


# --- the system under test -----------------------------------------------------------------------


@dataclass(frozen=True)
class PageSetup:
    tenant_slug: str
    visitor_token: str


class Bench(LoadBench):
    def run(self) -> int:
        wrk = ensure_wrk()
        env = self.start_services()
        setup = self.create_page()

        from tenants.embedded import free_port

        bare_port = free_port()
        workers = str(self.args.api_workers)
        api_url = self.start_api(env, "--workers", workers)
        page_path = f"/s/{setup.tenant_slug}/{PAGE_SLUG}"
        body = self.capture_page(api_url + page_path, setup.visitor_token)
        body_path = self.workdir / "page.html"
        body_path.write_bytes(body)
        log(f"the identified view is {len(body)} bytes")

        script = self.workdir / "page.lua"
        write_lua_script(script, setup.visitor_token)

        # The baseline first, alone: the API is idle meanwhile, and the baseline is gone before the API's run.
        self.start(
            "bare",
            [sys.executable, "-m", "bench.pages", "--serve-bare", str(bare_port), "--api-workers", workers],
            {**env, BARE_BODY_ENV: str(body_path)},
        )
        bare_url = f"http://127.0.0.1:{bare_port}{page_path}"
        self.wait_until_answers("bare", lambda: get_status(bare_url) == 200)
        bare = self.load(wrk, script, bare_url, "bare", server="bare")
        self.stop("bare")

        page = self.load(wrk, script, api_url + page_path, "page", server="api")
        self.check_running()

        ratio = page.rps / bare.rps if bare.rps else 0.0
        failures = [f"{result.label} had {result.errors} failed requests" for result in (bare, page) if result.errors]
        if ratio < RATIO_TARGET:
            log(f"ratio {ratio:.3f} misses its target of {RATIO_TARGET}")
        print(
            f"page_cpu_us={page.cpu_us:.0f} bare_cpu_us={bare.cpu_us:.0f} "
            f"cpu_ratio={bare.cpu_us / page.cpu_us if page.cpu_us else 0:.3f} "
            f"page_errors={page.errors} bare_errors={bare.errors} page_p50_ms={page.p50_ms:.1f} "
            f"bare_p99_ms={bare.p99_ms:.1f} page_bytes={len(body)} api_workers={workers} "
            f"connections={self.args.connections} seconds={self.args.seconds}"
        )
        print(f"page_rps={page.rps:.0f} bare_rps={bare.rps:.0f} ratio={ratio:.3f} p99_ms={page.p99_ms:.1f}")
        if failures:
            log("FAILED: " + "; ".join(failures))
            return 1
        return 0

    def create_page(self) -> PageSetup:
        """A tenant, its page of ten blocks, and a visitor a form submission identified."""
        from tenants.accounts.service import signup
        from tenants.contacts.service import ContactChanges, upsert_by_email
        from tenants.forms.service import create_form
        from tenants.identity.service import link_visitor
        from tenants.isolation import dispose_engine, tenant_session
        from tenants.models import Evidence
        from tenants.pages.service import create_page
        from tenants.tracking.sites import create_site
        from tenants.tracking.visitors import visitor_of_browser

        tenant = signup(name="Bench pages", owner_email="bench@example.com", password=secrets.token_urlsafe(18)).tenant
        browser = visitor_of_browser(tenant.id, None, first_hit=(uuid.uuid4(), int(time.time() * 1000)))
        with tenant_session(tenant.id) as session:
            site = create_site(session, name="Shop", allowed_origins=["https://shop.example"])
            form = create_form(
                session,
                site_id=site.id,
                name="Newsletter",
                fields=[{"name": "email", "maps_to": "email"}, {"name": "first_name", "maps_to": "first_name"}],
            )
            create_page(
                session,
                slug=PAGE_SLUG,
                title="Welcome {{contact.first_name|}}",
                blocks=blocks(form.id),
                meta={"description": "Attribution that knows its reader"},
            )
            contact, _ = upsert_by_email(session, ContactChanges(email="monica@example.com", first_name=FIRST_NAME))
            link_visitor(session, visitor_id=browser.visitor_id, contact_id=contact.id, evidence=Evidence.FORM)
        dispose_engine()  # this process is done with the database until the clean-up
        return PageSetup(tenant.slug, browser.token)

    def capture_page(self, url: str, visitor_token: str) -> bytes:
        """The page as the identified visitor gets it, checked; the baseline answers these bytes."""
        import httpx

        with httpx.Client(cookies={"tm_vid": visitor_token}, timeout=30) as client:
            # The first render creates the tenant's hosted site (a write): the last two renders must match.
            renders = [client.get(url) for _ in range(3)]
        last = renders[-1]
        if last.status_code != 200:
            raise BenchError(f"the page answered {last.status_code}: {last.text[:500]}")
        shown = re.findall(r'data-block="(\w+)"', last.text)
        problems = []
        if GREETING not in last.text:
            problems.append(f"no {GREETING!r}")
        if len(shown) != 7:
            problems.append(f"{len(shown)} blocks shown instead of the identified visitor's 7")
        if "monica@example.com" in last.text or "Welcome!" in last.text:
            problems.append("a block of another level is shown")
        if "set-cookie" in last.headers:
            problems.append(f"a cookie is set: {last.headers['set-cookie']}")
        # A rendered form stamps the time it was shown (the fill-time check): the one part that may differ.
        if _unstamped(renders[-2].content) != _unstamped(last.content):
            problems.append("two renders differ, so the baseline cannot answer the same bytes")
        if problems:
            raise BenchError("the page is not the identified view: " + "; ".join(problems) + f"\n{last.text[:2000]}")
        log(f"the page shows the identified view: blocks {', '.join(shown)}")
        return last.content

    def load(self, wrk: str, script: Path, url: str, label: str, *, server: str) -> LoadResult:
        """A warm-up, not counted, then the measured wrk run, with the CPU the ``server`` process tree used."""
        if self.args.warmup_seconds:
            log(f"{label}: warming up for {self.args.warmup_seconds} s")
            self.wrk(wrk, script, url, f"{label}-warmup", self.args.warmup_seconds)
        log(f"{label}: {self.args.connections} connections for {self.args.seconds} s")
        cpu_before = self.cpu_seconds(server)
        result = parse_wrk_output(label, self.wrk(wrk, script, url, label, self.args.seconds))
        result.server_cpu_s = self.cpu_seconds(server) - cpu_before
        log(result.describe())
        return result

    def wrk(self, wrk: str, script: Path, url: str, label: str, seconds: int) -> str:
        command = [
            wrk,
            f"-t{self.args.threads}",
            f"-c{self.args.connections}",
            f"-d{seconds}s",
            "--timeout=10s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        output_path = self.workdir / f"wrk-{label}.txt"
        with output_path.open("w") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
            try:
                process.wait()
            finally:
                if process.poll() is None:
                    process.terminate()
                    process.wait()
        text = output_path.read_text()
        print(text.rstrip(), file=sys.stderr)
        if process.returncode:
            raise BenchError(f"{label}: wrk exited with {process.returncode}")
        return text


def main(argv: list[str] | None = None) -> int:
    parser = load_bench_parser(__doc__ or "", seconds=20)
    parser.add_argument("--warmup-seconds", type=int, default=3, help="uncounted load before each (default 3)")
    return load_bench_main(parser.parse_args(argv), "bench.pages:create_bare_app", Bench)


if __name__ == "__main__":
    sys.exit(main())
