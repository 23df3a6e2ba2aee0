"""Real Redis topologies the suite starts itself: a 3-primary, 3-replica Redis Cluster and a
primary + replica watched by 3 sentinels, all on free loopback ports in a temporary directory,
stopped by pid. Never the machine's own Redis.

Failover is quick on purpose (a node is judged down after 1 s), so that the failover tests
stay short.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from devtools import processes
from devtools.processes import free_port
from devtools.processes import start_process
from devtools.processes import start_redis_server
from devtools.processes import stop_process
from tests.conftest import redis_server_binary
from tests.conftest import require_binary

NODE_TIMEOUT_MS = 1000
SENTINEL_MASTER = "mymaster"
READY_SECONDS = 30


@dataclass
class Topology:
    """Processes started for one topology, by port; ``stop()`` ends each by its pid."""

    directory: Path
    processes: dict[int, subprocess.Popen] = field(default_factory=dict)

    def start(self, port: int, argv: list[str]) -> None:
        with (self.directory / f"{port}.log").open("ab") as log:
            self.processes[port] = start_process(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
            )

    def start_redis(self, binary: str, port: int, *options: str) -> None:
        """redis-server on ``port`` (no persistence, log in ``PORT.log``), answering PING."""
        logfile = str(self.directory / f"{port}.log")
        argv = ("--save", "", "--appendonly", "no", "--logfile", logfile, *options)
        try:
            process, _ = start_redis_server(binary, self.directory, *argv, port=port)
        except RuntimeError as error:
            pytest.fail(str(error))
        self.processes[port] = process

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would (no chance to hand over)."""
        process = self.processes[port]
        process.kill()
        process.wait(timeout=10)

    @contextlib.contextmanager
    def paused(self, port: int) -> Iterator[None]:
        """SIGSTOP one node for the block (alive, attached, silent: a stalled replica), and
        SIGCONT it however the block ends."""
        process = self.processes[port]
        process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process, 10)


def wait_until(condition: Callable[[], bool], what: str, seconds: float = READY_SECONDS) -> None:
    """Poll ``condition`` (RedisError counts as not yet) until true, bounded in time."""

    def holds() -> bool:
        try:
            return bool(condition())
        except redis.RedisError:
            return False

    if not processes.wait_until(holds, seconds):
        pytest.fail(f"{what} not within {seconds} s")


def _node(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1, decode_responses=True)


@dataclass
class Cluster(Topology):
    """Three primaries with one replica each."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{next(iter(self.processes))}/0"

    def _slots(self, port: int) -> list:
        return _node(port).execute_command("CLUSTER", "SLOTS")

    def _live_port(self) -> int:
        return next(p for p, process in self.processes.items() if process.poll() is None)

    def primary_port_of(self, key: str) -> int:
        """The port of the primary that serves ``key``'s slot now."""
        live = self._live_port()
        slot = int(_node(live).execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, primary, *_ in self._slots(live):
            if start <= slot <= end:
                return int(primary[1])
        raise AssertionError(f"slot {slot} is not served")

    def replica_port_of(self, primary: int) -> int:
        for _, _, serving, *replicas in self._slots(primary):
            if int(serving[1]) == primary and replicas:
                return int(replicas[0][1])
        raise AssertionError(f"{primary} has no replica")

    def every_primary_has_a_replica(self) -> bool:
        """As every live node sees it (replicas become known by gossip, not at once)."""
        live = [p for p, process in self.processes.items() if process.poll() is None]
        return all(len(entry) >= 4 for port in live for entry in self._slots(port))

    def is_ok(self) -> bool:
        live = [p for p, proc in self.processes.items() if proc.poll() is None]
        return all(_node(p).cluster("INFO")["cluster_state"] == "ok" for p in live)


def start_cluster(directory: Path) -> Cluster:
    """``redis-server --cluster-enabled yes`` x 6, then ``redis-cli --cluster create``."""
    binary = redis_server_binary()
    cli = require_binary("redis-cli", "redis-tools")
    cluster = Cluster(directory)
    try:
        for port in [free_port() for _ in range(6)]:
            cluster.start_redis(
                binary,
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-port",  # the bus; its default, port + 10000, may be taken or > 65535
                str(free_port()),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
            )
        ports = list(cluster.processes)
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        subprocess.run(
            [*create, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(cluster.is_ok, "cluster_state:ok on every node")
        wait_until(cluster.every_primary_has_a_replica, "every primary's replica known to all")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class SentinelGroup(Topology):
    """A primary, one replica, three sentinels monitoring them as ``mymaster``."""

    primary: int = 0
    replica: int = 0
    sentinels: list[int] = field(default_factory=list)

    @property
    def environ(self) -> dict[str, str]:
        """The service's settings for this group."""
        return {
            "REDIS_MODE": "sentinel",
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinels),
            "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
            "REDIS_URL": "redis://127.0.0.1/0",  # host unused in sentinel mode
        }

    def current_primary(self) -> int:
        for port in self.sentinels:
            try:
                host_port = _node(port).sentinel_get_master_addr_by_name(SENTINEL_MASTER)
            except redis.RedisError:
                continue
            return int(host_port[1])
        raise AssertionError("no sentinel answers")


def start_sentinel_group(directory: Path) -> SentinelGroup:
    """``redis-server`` x 2 (the second ``--replicaof`` the first), ``redis-sentinel`` x 3."""
    binary = redis_server_binary()
    sentinel_binary = require_binary("redis-sentinel", "redis-sentinel")
    group = SentinelGroup(directory)
    group.primary, group.replica = free_port(), free_port()
    try:
        group.start_redis(binary, group.primary)
        group.start_redis(binary, group.replica, "--replicaof", "127.0.0.1", str(group.primary))
        wait_until(
            lambda: _node(group.replica).info("replication")["master_link_status"] == "up",
            "the replica in sync",
        )
        # Staggered down-after times: three sentinels that judge the primary down at the same
        # moment each vote for themselves, and the election waits 2 x failover-timeout.
        for down_after in (NODE_TIMEOUT_MS, NODE_TIMEOUT_MS + 400, NODE_TIMEOUT_MS + 800):
            port = free_port()
            config = directory / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {group.primary} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} {down_after}\n"
                f"sentinel failover-timeout {SENTINEL_MASTER} 2000\n"
            )
            group.start(port, [sentinel_binary, str(config)])
            group.sentinels.append(port)
        wait_until(
            lambda: all(
                len(_node(p).sentinel_sentinels(SENTINEL_MASTER)) == 2
                and len(_node(p).sentinel_slaves(SENTINEL_MASTER)) == 1
                for p in group.sentinels
            ),
            "each sentinel seeing the replica and the two other sentinels",
        )
    except BaseException:
        group.stop()
        raise
    return group


def flush_cluster(client: RedisCluster) -> None:
    """Empty every primary of the cluster."""
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
