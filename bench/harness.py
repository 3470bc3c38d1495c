"""What the benchmarks share: the services and child processes they run against, their command-line
life cycle (Ctrl-C and errors clean everything up), the wrk load generator and small helpers."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "REPO",
    "BenchError",
    "Rig",
    "check_stop",
    "ensure_wrk",
    "get_status",
    "load_bench_main",
    "load_bench_parser",
    "log",
    "lua_string",
    "owner_connection",
    "percentile",
    "run_bench",
    "serve_bare",
    "trailmark_command",
]

REPO = Path(__file__).resolve().parents[1]


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


STOP = threading.Event()
"""Set by Ctrl-C or SIGTERM. The handler also raises KeyboardInterrupt, but a signal that arrives while
a weakref or ``__del__`` callback runs has its exception printed and swallowed, so loops check this too."""


def check_stop() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt("stop requested")


def owner_connection(owner_url: str) -> Any:
    """An autocommit psycopg connection as the database owner (every query sees the latest commit).
    Tenant tables have FORCE ROW LEVEL SECURITY: set ``app.tenant_id`` to read a tenant's rows."""
    import psycopg

    from tests.services import libpq_url

    return psycopg.connect(libpq_url(owner_url), autocommit=True)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least ``fraction`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def trailmark_command(*args: str) -> list[str]:
    """``trailmark …`` as this interpreter runs it from the checkout."""
    return [sys.executable, "-m", "api.cli", *args]


class Rig:
    """A fresh database and Redis database, migrated, and the child processes started against them;
    :meth:`close` stops and removes all of it, and keeps the logs when something went wrong."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="trailmark-bench-"))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.services: Any = None
        self.keep_workdir = False

    @property
    def owner_url(self) -> str:
        return str(self.services.owner_url)

    def start_services(self) -> dict[str, str]:
        """Create and migrate the database; returns the environment for child processes (also set in
        this one's, before any tenants module reads its settings)."""
        from tests.services import start_test_services, test_secret_keys, test_signing_keys

        self.services = start_test_services()
        log(f"database {self.services.database}, Redis {self.services.redis_url}, logs in {self.workdir}")
        os.environ.update(self.services.env())
        os.environ["TRAILMARK_SIGNING_KEYS"] = test_signing_keys()
        os.environ["TRAILMARK_SECRET_KEYS"] = test_secret_keys()
        os.environ["TRAILMARK_DATA_DIR"] = str(self.workdir / "data")
        os.environ["TRAILMARK_HOST"] = "127.0.0.1"
        from tenants.isolation.migrate import migrate

        migrate(self.services.owner_url, self.services.app_url)
        return dict(os.environ)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        """Run ``command`` from the checkout, its output in ``<workdir>/<name>.log``."""
        with (self.workdir / f"{name}.log").open("wb") as output:
            self.processes[name] = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)

    def start_api(self, env: dict[str, str], *extra_args: str) -> str:
        """``trailmark api`` on a free port; returns its base URL once it answers."""
        from tenants.embedded import free_port

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.start(
            "api",
            trailmark_command("api", *extra_args),
            {**env, "TRAILMARK_PORT": str(port), "TRAILMARK_PUBLIC_URL": url},
        )
        self.wait_until_answers("api", lambda: get_status(f"{url}/health") == 200)
        return url

    def check_running(self) -> None:
        """Raise, with its log, if a child process has exited (or a stop was requested)."""
        check_stop()
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise BenchError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")

    def wait_until_answers(self, name: str, answers: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not answers():
            self.check_running()
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not answer within {timeout:.0f} s:\n{self.log_tail(name)}")
            time.sleep(0.1)
        log(f"{name} answers")

    def log_tail(self, name: str, lines: int = 30) -> str:
        self.keep_workdir = True
        return "\n".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])

    def cpu_seconds(self, name: str) -> float:
        """CPU seconds used so far by a child process and its own children (uvicorn's workers)."""
        import psutil

        root = psutil.Process(self.processes[name].pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        for name in list(self.processes):
            self.stop(name)
        if self.services is not None:
            from tenants.isolation import dispose_engine

            dispose_engine()
            self.services.close()
        if self.keep_workdir:
            log(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    STOP.set()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_bench(rig: Rig, body: Callable[[], int]) -> int:
    """Run ``body``; whatever happens, close ``rig``. Exit status: body's, 1 on a BenchError, 130 when
    interrupted (the logs are then kept)."""
    # Also SIGINT: a shell that starts the bench in the background hands it SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return body()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        rig.keep_workdir = True
        return 130
    except BenchError as error:
        log(f"FAILED: {error}")
        rig.keep_workdir = True
        return 1
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave servers or the database behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        rig.close()


def serve_bare(app_factory: str, port: int, workers: int) -> None:
    """A baseline application served the way ``trailmark api`` serves the API (api/cli.py, _api):
    only the application differs."""
    import uvicorn

    uvicorn.run(
        app_factory,
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
        proxy_headers=False,
    )


def load_bench_parser(description: str, seconds: int) -> argparse.ArgumentParser:
    """The options of a benchmark that loads an API endpoint and its bare baseline with wrk."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=seconds, help=f"length of each load window (default {seconds})")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--api-workers", type=int, default=1, help="uvicorn worker processes, for the API and the baseline alike"
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser


class LoadBench(Rig):
    """A benchmark run by :func:`load_bench_main` with the options of :func:`load_bench_parser`."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args

    def run(self) -> int:
        raise NotImplementedError


def load_bench_main(
    args: argparse.Namespace, bare_app_factory: str, bench: Callable[[argparse.Namespace], LoadBench]
) -> int:
    """As the benchmark (or, with ``--serve-bare PORT``, as its baseline server)."""
    if args.serve_bare:
        serve_bare(bare_app_factory, args.serve_bare, args.api_workers)
        return 0
    if args.seconds < 1 or args.connections < 1 or args.threads < 1 or args.api_workers < 1:
        log("--seconds, --connections, --threads and --api-workers must be at least 1")
        return 2
    rig = bench(args)
    return run_bench(rig, rig.run)


def lua_string(value: str) -> str:
    if "]==]" in value:
        raise BenchError(f"cannot quote {value[:40]!r}… for Lua")
    return f"[==[{value}]==]"


def ensure_wrk() -> str:
    """wrk from PATH, else Debian's package (the bench machines are Debian and run as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is not installed; trying `apt-get install -y wrk`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "install", "-y", "wrk"], ["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        try:
            subprocess.run(command, env=env, stdout=sys.stderr, stderr=sys.stderr, check=False)
        except OSError:
            break
        found = shutil.which("wrk")
        if found:
            return found
    raise BenchError("wrk is required and could not be installed: install it (Debian: apt-get install wrk)")


def get_status(url: str) -> int | None:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return None
