"""``trailmark run`` on a machine with no database or Redis configured: the embedded default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psutil
import pytest

from tenants.embedded import free_port
from tests.conftest import REPO, wait_until


def processes_mentioning(path: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(path in part for part in process.info["cmdline"] or []):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.slow
def test_run_with_no_urls_serves_ready_and_stops_everything_on_sigterm() -> None:
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
    started: list[psutil.Process] = []
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"run exited with {process.returncode}: {process.stdout.read()!r}")  # type: ignore[union-attr]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, "`trailmark run` to answer /ready", interval=0.25)
        key = __import__("json").loads((Path(data_dir) / "demo-tenant.json").read_text())["api_key"]
        tenant = httpx.get(f"http://127.0.0.1:{port}/api/v1/tenant", headers={"Authorization": f"Bearer {key}"})
        assert tenant.json()["slug"] == "demo"
        started = psutil.Process(process.pid).children(recursive=True) + processes_mentioning(data_dir)
        assert len(started) >= 4  # api, worker (+ its pool), beat, redis, postgres
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    assert "demo tenant API key: tm_" in output
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
    assert processes_mentioning(data_dir) == []
