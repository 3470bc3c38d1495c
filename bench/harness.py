"""What the benchmarks share: logging, the wrk load generator, and small HTTP and Lua helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

__all__ = ["BenchError", "ensure_wrk", "get_status", "log", "lua_string"]


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
