"""``trailmark run`` on a machine with no database or Redis configured: the embedded default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tenants.embedded import free_port
from tests.conftest import REPO, wait_until
from tests.support.dashboard import login_http


def processes_mentioning(path: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(path in part for part in process.info["cmdline"] or []):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


class OutputReader:
    """Collects a process's output lines as they come, so a test can look at them while it runs."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def finish(self, timeout: float = 60) -> str:
        self._thread.join(timeout)
        return self.text()


QUIET_PERIOD_SECONDS = 10
"""How long `trailmark run` is watched after start-up while beat sends the drain (every second) and the
outbox sweep (every two seconds) to the worker."""


@pytest.mark.slow
def test_run_with_no_urls_says_where_things_are_stays_quiet_and_stops_everything_on_sigterm() -> None:
    """A person runs `trailmark run` on a fresh machine: it says where the API and the demo key are, then
    stays quiet (no warnings, no line per task), and SIGTERM stops every process it started."""
    data_dir = tempfile.mkdtemp(prefix="trailmark-run-")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAILMARK_", "PYTEST_"))}
    env.update(TRAILMARK_DATA_DIR=data_dir, TRAILMARK_PORT=str(port))
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = OutputReader(process)
    started: list[psutil.Process] = []
    try:

        def banner_printed() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"run exited with {process.returncode}: {output.text()}")
            return "trailmark: press Ctrl-C to stop" in output.lines

        wait_until(banner_printed, 90, "`trailmark run` to print its banner", interval=0.25)
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200
        start_up = list(output.lines)
        key_file = Path(data_dir) / "demo-tenant.json"
        demo = json.loads(key_file.read_text())
        key = demo["api_key"]
        assert f"trailmark: demo tenant API key: {key}" in start_up
        assert f"trailmark: demo tenant key and owner password kept in {key_file}" in start_up
        # The banner's dashboard login works as printed.
        assert f"trailmark: dashboard http://127.0.0.1:{port}/app" in start_up
        login = f"trailmark:   log in: workspace demo, email demo@example.com, password {demo['owner_password']}"
        assert login in start_up
        staff = login_http(f"http://127.0.0.1:{port}", "demo", "demo@example.com", demo["owner_password"])
        assert staff.get("/app").status_code == 200
        assert f"trailmark: OpenAPI  http://127.0.0.1:{port}/api/schema/openapi.json" in output.text()
        assert not [line for line in start_up if "Warning" in line], output.text()
        assert httpx.get(f"http://127.0.0.1:{port}/api/schema/openapi.json", timeout=5).status_code == 200
        tenant = httpx.get(f"http://127.0.0.1:{port}/api/v1/tenant", headers={"Authorization": f"Bearer {key}"})
        assert tenant.json()["slug"] == "demo"
        # The other commands reach the embedded services of the run beside them.
        beside = subprocess.run(
            [sys.executable, "-m", "api.cli", "ingest", "dead-letters"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert beside.returncode == 0, beside.stderr

        time.sleep(QUIET_PERIOD_SECONDS)  # the drain and the sweep run about 15 times meanwhile
        after_start_up = output.lines[len(start_up) :]
        assert len(after_start_up) <= 2, after_start_up
        started = psutil.Process(process.pid).children(recursive=True) + processes_mentioning(data_dir)
        assert len(started) >= 4  # api, worker (+ its pool), beat, redis, postgres
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    text = output.finish()
    assert process.returncode == 0, text
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
    assert processes_mentioning(data_dir) == []
    assert not (Path(data_dir) / "running.json").exists()
