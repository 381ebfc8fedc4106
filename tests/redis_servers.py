"""Real Redis topologies on loopback ports, from Debian's redis-server and redis-sentinel.

    with redis_cluster(tmp_path) as cluster:        # 3 masters, one replica each
        cluster.url                                 # redis+cluster://127.0.0.1:p1,...
        cluster.kill_master_of("snapgraph:list:{x}")  # SIGKILL; its replica takes over
    with redis_sentinel(tmp_path) as setup:         # a master, a replica, three sentinels
        setup.url                                   # redis+sentinel://.../snapgraph
        setup.failover()                            # SENTINEL FAILOVER, waits for the new master

Each server keeps nothing on disk but its cluster or sentinel state, in the given directory.
Waits poll with a deadline; a topology that does not form fails the caller with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from ports import free_port

SERVICE = "snapgraph"


def binaries_or_skip() -> None:
    """redis-server, redis-sentinel and redis-cli must exist: a skip with the reason outside
    CI, a failure under CI (`.ci/run` installs them)."""
    missing = [
        name for name in ("redis-server", "redis-sentinel", "redis-cli") if not shutil.which(name)
    ]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install redis-server redis-sentinel"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not _quietly(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _quietly(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except (redis.RedisError, OSError):
        return False


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def _start(binary: str, directory: Path, port: int, *args: str) -> RedisServer:
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [binary, *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process)
    wait_until(lambda: _answers(server), f"{binary} on port {port}")
    return server


def _answers(server: RedisServer) -> bool:
    # A server that exited (its port taken) must not pass for whatever else answers there.
    assert server.alive(), f"redis on port {server.port} exited with {server.process.poll()}"
    return bool(server.client().info("server")["process_id"] == server.process.pid)


def _stop(servers: list[RedisServer]) -> None:
    for server in servers:
        if server.alive():
            server.process.terminate()
    for server in servers:
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


_NODE = ("--save", "", "--appendonly", "no")


@dataclass
class Cluster:
    servers: list[RedisServer]
    url: str
    seed: redis.RedisCluster = field(init=False)

    def __post_init__(self) -> None:
        self.seed = redis.RedisCluster(host="127.0.0.1", port=self.servers[0].port)

    def master_of(self, key: str) -> RedisServer:
        slot = key_slot(key.encode())
        for low, high, (_, port, *_rest), *_replicas in self._slots():
            if low <= slot <= high:
                return next(server for server in self.servers if server.port == port)
        raise AssertionError(f"no master serves slot {slot}")

    def kill_master_of(self, key: str) -> RedisServer:
        """SIGKILL the master that holds `key`, then wait for its replica to take over."""
        master = self.master_of(key)
        master.kill()
        wait_until(lambda: self.master_of(key).port != master.port and self._ok(), "failover")
        return master

    def keys(self, pattern: str) -> list[str]:
        found: list[str] = []
        for server in self.servers:
            if server.alive() and server.client().info("replication")["role"] == "master":
                found += server.client().keys(pattern)
        return found

    def _slots(self) -> list[list[object]]:
        for server in self.servers:
            if server.alive():
                try:
                    return list(server.client().execute_command("CLUSTER SLOTS"))
                except redis.RedisError:
                    continue
        raise AssertionError("no cluster node answers")

    def _ok(self) -> bool:
        return all(
            server.client().execute_command("CLUSTER INFO")["cluster_state"] == "ok"
            for server in self.servers
            if server.alive()
        )


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[Cluster]:
    """A cluster of `masters` masters with one replica each; failover after 1 s of silence."""
    binaries_or_skip()
    servers: list[RedisServer] = []
    try:
        for index in range(2 * masters):
            port = free_port(with_bus=True)
            servers.append(
                _start(
                    "redis-server",
                    directory / f"node-{index}",
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    *_NODE,
                )
            )
        addresses = [f"127.0.0.1:{server.port}" for server in servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1"],
            input=b"yes\n",
            check=True,
            capture_output=True,
            timeout=60,
        )
        cluster = Cluster(servers, "redis+cluster://" + ",".join(addresses[:masters]))
        wait_until(cluster._ok, "the cluster to form")
        wait_until(lambda: _replicas_synced(servers), "replicas to sync")
        yield cluster
    finally:
        _stop(servers)


def _replicas_synced(servers: list[RedisServer]) -> bool:
    for server in servers:
        info = server.client().info("replication")
        if info["role"] == "slave" and info.get("master_link_status") != "up":
            return False
    return True


@dataclass
class SentinelSetup:
    master: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]
    url: str

    def current_master_port(self) -> int:
        answer = self.sentinels[0].client().sentinel_get_master_addr_by_name(SERVICE)
        return int(answer[1])

    def failover(self) -> None:
        """Promote the replica (SENTINEL FAILOVER) and wait until every sentinel says so."""
        before = self.current_master_port()
        self.sentinels[0].client().execute_command("SENTINEL FAILOVER", SERVICE)
        wait_until(
            lambda: all(
                int(s.client().sentinel_get_master_addr_by_name(SERVICE)[1]) != before
                for s in self.sentinels
            ),
            "the sentinels to announce a new master",
        )
        promoted = self.replica if self.replica.port != before else self.master
        wait_until(
            lambda: promoted.client().info("replication")["role"] == "master",
            "the replica to become master",
        )


@contextmanager
def redis_sentinel(directory: Path) -> Iterator[SentinelSetup]:
    """A master, its replica, and three sentinels that agree (quorum 2) on a failover."""
    binaries_or_skip()
    servers: list[RedisServer] = []
    try:
        master = _start("redis-server", directory / "master", free_port(), *_NODE)
        servers.append(master)
        replica = _start(
            "redis-server",
            directory / "replica",
            free_port(),
            "--replicaof",
            "127.0.0.1",
            str(master.port),
            *_NODE,
        )
        servers.append(replica)
        wait_until(lambda: _replicas_synced([replica]), "the replica to sync")
        sentinels = []
        for index in range(3):
            config = directory / f"sentinel-{index}.conf"
            config.write_text(
                f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            sentinel = _start(
                "redis-sentinel", directory / f"sentinel-{index}", free_port(), str(config)
            )
            sentinels.append(sentinel)
            servers.append(sentinel)
        setup = SentinelSetup(
            master,
            replica,
            sentinels,
            "redis+sentinel://"
            + ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
            + f"/{SERVICE}/0",
        )
        wait_until(
            lambda: all(
                int(s.client().execute_command("SENTINEL MASTER", SERVICE)["num-other-sentinels"])
                == 2
                and int(s.client().execute_command("SENTINEL MASTER", SERVICE)["num-slaves"]) == 1
                for s in sentinels
            ),
            "the sentinels to see each other and the replica",
        )
        yield setup
    finally:
        _stop(servers)


@contextmanager
def redis_node(directory: Path) -> Iterator[RedisServer]:
    """One plain Redis server."""
    binaries_or_skip()
    server = _start("redis-server", directory, free_port(), *_NODE)
    try:
        yield server
    finally:
        server.process.send_signal(signal.SIGCONT)  # in case a test left it stopped
        _stop([server])
