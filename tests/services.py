"""Which PostgreSQL and Redis the tests use, in this order: ``TRAILMARK_TEST_DATABASE_URL`` /
``TRAILMARK_TEST_REDIS_URL``; the servers on 127.0.0.1:5432 / 6379 if they answer; else embedded ones.

Each test session gets its own database (dropped at the end) and reaches data as a plain app role,
exactly like production; the owner URL is used only to migrate and to inspect the catalog.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from sqlalchemy import make_url

from tenants.embedded import free_port, start_redis_server

APP_ROLE = "trailmark_test_app"
APP_PASSWORD = "trailmark-test"
TEST_REDIS_DBS = range(15, 0, -1)
"""Each test run claims a free database number of its own (never db 0, a developer's), so runs side by side
on one machine never share queues or streams."""
CLAIM_KEY = "trailmark:test-run"


@dataclass
class TestServices:
    owner_url: str
    app_url: str
    redis_url: str
    admin_url: str
    """Owner connection to the server's maintenance database, to create and drop the test database."""
    database: str
    _cleanups: list[object] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "TRAILMARK_DATABASE_URL": self.app_url,
            "TRAILMARK_MIGRATION_DATABASE_URL": self.owner_url,
            "TRAILMARK_REDIS_URL": self.redis_url,
        }

    def close(self) -> None:
        release_redis(self.redis_url)
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        for cleanup in reversed(self._cleanups):
            if isinstance(cleanup, subprocess.Popen):
                cleanup.terminate()
                cleanup.wait(10)
            elif hasattr(cleanup, "cleanup"):
                cleanup.cleanup()


def _answers_postgres(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _answers_redis(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def libpq_url(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as psycopg and libpq take it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def start_test_services() -> TestServices:
    cleanups: list[object] = []
    # TRAILMARK_TEST_SERVICES=embedded ignores local servers: how a fresh laptop runs the suite.
    embedded_only = os.environ.get("TRAILMARK_TEST_SERVICES") == "embedded"
    admin = os.environ.get("TRAILMARK_TEST_DATABASE_URL")
    if not admin:
        local = "postgresql://postgres@127.0.0.1:5432/postgres"
        if not embedded_only and _answers_postgres(local):
            admin = local
        else:
            import pgserver

            server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="trailmark-test-pg-")), cleanup_mode="delete")
            cleanups.append(server)
            admin = server.get_uri()
    admin = libpq_url(admin)
    database = f"trailmark_test_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    admin_parts = make_url(admin)
    owner_url = admin_parts.set(drivername="postgresql+psycopg", database=database)
    app_url = owner_url.set(username=APP_ROLE, password=APP_PASSWORD)

    redis_url = os.environ.get("TRAILMARK_TEST_REDIS_URL")
    if redis_url:
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()
    elif not embedded_only and _answers_redis("redis://127.0.0.1:6379/0"):
        redis_url = _claim_database("redis://127.0.0.1:6379", database)
    else:
        port = free_port()
        cleanups.append(
            start_redis_server(Path(tempfile.mkdtemp(prefix="trailmark-test-redis-")), port, persistent=False)
        )
        redis_url = f"redis://127.0.0.1:{port}/0"
    return TestServices(
        owner_url=owner_url.render_as_string(hide_password=False),
        app_url=app_url.render_as_string(hide_password=False),
        redis_url=redis_url,
        admin_url=admin,
        database=database,
        _cleanups=cleanups,
    )


def _claim_database(server: str, run_id: str) -> str:
    for number in TEST_REDIS_DBS:
        client = redis.Redis.from_url(f"{server}/{number}")
        try:
            if client.set(CLAIM_KEY, run_id, nx=True, ex=6 * 3600):
                client.flushdb()  # leftovers of a run that crashed
                client.set(CLAIM_KEY, run_id, ex=6 * 3600)
                return f"{server}/{number}"
        finally:
            client.close()
    raise RuntimeError(f"every Redis database 1-15 on {server} is claimed by another test run ({CLAIM_KEY})")


def release_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


def test_secret_keys() -> str:
    """A ring of two AES-256 keys (newest first), as a deployment that rotated once has."""
    newest = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    old = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"s2:{newest},s1:{old}"


def test_signing_keys() -> str:
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    old = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"t2:{secret},t1:{old}"
