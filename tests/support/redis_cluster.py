"""A real 3-master Redis Cluster on free 127.0.0.1 ports, as an operator builds one: ``redis-server
--cluster-enabled yes`` per node (AOF fsynced on every write), then ``redis-cli --cluster create``. A node can be
killed with SIGKILL and started again on its port and folder, where it finds its slots (nodes.conf) and data
(the AOF)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tenants.embedded import free_port

__all__ = ["LocalCluster", "missing_cluster_binaries"]

NODE_TIMEOUT_MS = 2000


def missing_cluster_binaries() -> str | None:
    """Why a cluster cannot be started here, or None."""
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (Debian: apt-get install redis-server redis-tools)"
    return None


class LocalCluster:
    def __init__(self, masters: int = 3) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="trailmark-redis-cluster-"))
        self.ports = [free_port() for _ in range(masters)]
        self.bus_ports = {port: free_port() for port in self.ports}
        """Given explicitly: the default, the port + 10000, may be taken or past 65535."""
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for port in self.ports:
                self.start(port)
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self, port: int) -> None:
        directory = self.folder / str(port)
        directory.mkdir(exist_ok=True)
        log = (directory / "redis.log").open("ab")
        self.processes[port] = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--cluster-enabled", "yes",
                "--cluster-port", str(self.bus_ports[port]),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--dir", str(directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.processes[port].poll() is not None:
                    raise RuntimeError(f"redis-server on {port} did not start; see {directory / 'redis.log'}") from None
                time.sleep(0.05)
            except redis.ResponseError:  # LOADING: replaying its AOF
                time.sleep(0.05)
        client.close()

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        with redis.Redis(host="127.0.0.1", port=self.ports[0]) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise AssertionError(f"no master serves slot {slot}")

    def kill(self, port: int) -> None:
        self.processes[port].kill()  # SIGKILL: no shutdown, no last write
        self.processes[port].wait(10)

    def wait_ok(self, timeout: float = 60) -> None:
        """Until every node says the cluster is ok (all slots served)."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for port in self.ports:
                try:
                    with redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5) as client:
                        info = client.execute_command("CLUSTER", "INFO")
                        states.append("cluster_state:ok" in (info.decode() if isinstance(info, bytes) else str(info)))
                except redis.RedisError:
                    states.append(False)
            if all(states):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the cluster is not ok after {timeout}s")
            time.sleep(0.1)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
