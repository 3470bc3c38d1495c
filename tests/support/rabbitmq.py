"""The RabbitMQ on 127.0.0.1:5672, one virtual host per test run, and workers started on it.

A run's vhost (``rabbitmqctl add_vhost``) holds its own queues, exchanges and delay queues, so runs side by side
and the machine's other users of RabbitMQ never see each other's messages; it is deleted at the end.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from kombu import Connection

from tests.conftest import REPO, child_env, log_file

__all__ = [
    "RABBITMQ_ADDRESS",
    "Vhost",
    "declared",
    "get_dead_letter",
    "missing_reason",
    "queue_state",
    "start_broker_worker",
]

RABBITMQ_ADDRESS = ("127.0.0.1", 5672)


def missing_reason() -> str | None:
    """Why the RabbitMQ tests cannot run here, or None when they can."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed (Debian: apt-get install rabbitmq-server; .ci/run does)"
    try:
        socket.create_connection(RABBITMQ_ADDRESS, timeout=2).close()
    except OSError:
        return "no RabbitMQ answers on 127.0.0.1:5672 (start it: rabbitmq-server -detached; .ci/run does)"
    return None


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "--quiet", *args], check=True, capture_output=True, timeout=60)


@dataclass
class Vhost:
    name: str

    @classmethod
    def create(cls) -> Vhost:
        vhost = cls(f"trailmark-test-{secrets.token_hex(4)}")
        _rabbitmqctl("add_vhost", vhost.name)
        _rabbitmqctl("set_permissions", "-p", vhost.name, "guest", ".*", ".*", ".*")
        return vhost

    def url(self, address: str = "127.0.0.1:5672") -> str:
        return f"amqp://guest:guest@{address}/{self.name}"

    def delete(self) -> None:
        _rabbitmqctl("delete_vhost", self.name)


def queue_state(url: str, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of ``queue``, by a passive declare; (0, 0) when it was never declared."""
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        try:
            answer = channel.queue_declare(queue=queue, passive=True)
        except connection.channel_errors:
            return 0, 0
        channel.close()
        return int(answer.message_count), int(answer.consumer_count)


def declared(url: str, *, queue: str | None = None, exchange: str | None = None) -> bool:
    """Whether the queue or exchange exists in the vhost (a passive declare creates nothing)."""
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        try:
            if queue is not None:
                channel.queue_declare(queue=queue, passive=True)
            if exchange is not None:
                channel.exchange_declare(exchange=exchange, type="topic", passive=True)
        except connection.channel_errors:
            return False
        channel.close()
        return True


def get_dead_letter(url: str, queue: str) -> Any:
    """Take the oldest message of the dead-letter queue (None when it is empty)."""
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        message = channel.basic_get(queue=queue, no_ack=True)
        channel.close()
        return message


def start_broker_worker(broker_url: str, *, concurrency: int = 1) -> subprocess.Popen[bytes]:
    """``trailmark worker`` on ``broker_url``, with the two test tasks of ``tests.support.broker_tasks`` registered
    too; in a session of its own, so a test can ``kill -9`` the worker and its pool processes at once."""
    code = "import sys, tests.support.broker_tasks; from api.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, "worker", "--concurrency", str(concurrency)],
        cwd=REPO,
        env=child_env(TRAILMARK_BROKER_URL=broker_url),
        stdout=log_file("rabbitmq-worker"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
