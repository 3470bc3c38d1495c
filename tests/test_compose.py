"""docker-compose.yml, read as Compose reads it (no Docker here): the simple stack by default, and the profile
``scale`` with RabbitMQ, a 3-master Redis Cluster and an app stack pointed at them."""

from __future__ import annotations

import re
import shlex
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tenants.settings import Settings
from tests.conftest import REPO
from workers.app import QUEUES

DEFAULT_SERVICES = {"postgres", "redis", "migrate", "api", "worker", "beat"}
SCALE_APP = {"api-scale", "worker-scale", "ingest-worker-scale", "beat-scale"}
CLUSTER_NODES = {"redis-node-1": 7000, "redis-node-2": 7001, "redis-node-3": 7002}
INGEST_CLUSTER_URL = "redis-cluster://redis-node-1:7000,redis-node-2:7001,redis-node-3:7002"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


def interpolated(value: str) -> str:
    """What Compose puts in for ``${NAME:-default}`` and ``${NAME:?error}`` when nothing is exported (a valid value
    for the required keys), and ``$$`` (a literal dollar)."""
    keys = {"TRAILMARK_SIGNING_KEYS": "k1:" + "A" * 43, "TRAILMARK_SECRET_KEYS": "s1:" + "B" * 43}
    value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), value)
    value = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: keys[m.group(1)], value)
    return value.replace("$$", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: interpolated(str(value)) for name, value in service.get("environment", {}).items()}


def command(service: dict[str, Any]) -> list[str]:
    found = service.get("command", [])
    return shlex.split(found) if isinstance(found, str) else [str(part) for part in found]


def test_the_default_stack_is_the_simple_one(compose: dict[str, Any]) -> None:
    """``docker compose up`` starts what it always did: one Redis as broker and buffer, no RabbitMQ, no cluster."""
    default = {name for name, service in compose["services"].items() if not service.get("profiles")}
    assert default == DEFAULT_SERVICES
    for name in DEFAULT_SERVICES - {"postgres", "redis"}:
        env = environment(compose["services"][name])
        assert env["TRAILMARK_REDIS_URL"] == "redis://redis:6379/0"
        assert "TRAILMARK_BROKER_URL" not in env and "TRAILMARK_INGEST_REDIS_URL" not in env
        assert "rabbitmq" not in compose["services"][name].get("depends_on", {})
    assert Settings.from_env(environment(compose["services"]["api"])).task_broker_url == "redis://redis:6379/0"


def test_the_scale_profile_runs_the_app_on_rabbitmq_and_the_redis_cluster(compose: dict[str, Any]) -> None:
    services = compose["services"]
    scale = {name for name, service in services.items() if service.get("profiles") == ["scale"]}
    assert scale == {"rabbitmq", *CLUSTER_NODES, "redis-cluster-init", *SCALE_APP}
    rabbitmq = services["rabbitmq"]
    major, minor = (int(part) for part in re.findall(r"\d+", rabbitmq["image"].split(":")[1])[:2])
    assert (major, minor) >= (3, 13)  # quorum queues with delivery limits and at-least-once dead-lettering
    for name in SCALE_APP:
        env = environment(services[name])
        broker = urlsplit(env["TRAILMARK_BROKER_URL"])
        assert (broker.scheme, broker.hostname, broker.port) == ("amqp", "rabbitmq", 5672)
        assert broker.username == rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"]
        assert broker.password == interpolated(rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"])
        assert broker.path == "/" + rabbitmq["environment"]["RABBITMQ_DEFAULT_VHOST"]
        assert env["TRAILMARK_INGEST_REDIS_URL"] == INGEST_CLUSTER_URL
        assert env["TRAILMARK_REDIS_URL"] == "redis://redis:6379/0"  # results, sessions, rate limits, caches
        settings = Settings.from_env(env)
        assert settings.task_broker_url == env["TRAILMARK_BROKER_URL"]
        depends = services[name]["depends_on"]
        assert depends["rabbitmq"] == {"condition": "service_healthy"}
        assert depends["redis-cluster-init"] == {"condition": "service_completed_successfully"}
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
    # Every queue has workers; ingest has its own.
    workers = [command(services[name]) for name in ("ingest-worker-scale", "worker-scale")]
    queues = [args[args.index("--queues") + 1] for args in workers]
    assert sorted(q for group in queues for q in group.split(",")) == sorted(QUEUES)
    assert queues[0] == "ingest"
    # Its own beat schedule: the default stack's beat must not share the file.
    assert services["beat-scale"]["volumes"] != services["beat"]["volumes"]
    assert services["api-scale"]["ports"] != services["api"]["ports"]


def test_three_cluster_masters_are_joined_once_by_the_init_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, port in CLUSTER_NODES.items():
        args = command(services[name])
        option = dict(zip(args[1::2], args[2::2], strict=False))
        assert args[0] == "redis-server"
        assert option["--port"] == str(port) and option["--cluster-enabled"] == "yes"
        assert option["--cluster-announce-hostname"] == name
        assert (option["--appendonly"], option["--maxmemory-policy"]) == ("yes", "noeviction")  # as the single Redis
        assert services[name]["healthcheck"]["test"] == ["CMD", "redis-cli", "-p", str(port), "ping"]
    init = services["redis-cluster-init"]
    script = command(init)[-1].replace("$$", "$")
    assert "redis-cli --cluster create" in script and "--cluster-replicas 0" in script and "--cluster-yes" in script
    for name, port in CLUSTER_NODES.items():
        assert f"getent hosts {name} | cut -d' ' -f1):{port}" in script
        assert init["depends_on"][name] == {"condition": "service_healthy"}
    assert script.startswith("if redis-cli -h redis-node-1 -p 7000 cluster info | grep -q cluster_state:ok")
    assert init["restart"] == "no"


def test_every_server_has_a_healthcheck_and_every_volume_is_declared(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "api", "rabbitmq", *CLUSTER_NODES, "api-scale"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    for name, service in services.items():
        for condition in service.get("depends_on", {}).values():
            assert condition["condition"] in ("service_healthy", "service_completed_successfully"), name
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], f"{name}: {volume}"
