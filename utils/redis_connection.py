"""The connection to Redis: one client for every topology, and how commands reach it.

The client (standalone, Sentinel's ``master_for`` or Redis Cluster, built on first use), one
command per round trip on this thread's connection with one resend when that connection broke,
EVALSHA with EVAL when Redis does not know a script, a change made durable with ``WAIT``, the
nodes to SCAN, PING and the eviction policies. What the commands do is the store's business
(utils/redis.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.connection import AbstractConnection

from utils.redis_scripts import Script

Client = redis.Redis | RedisCluster
NOEVICTION = "noeviction"
MARK_SECONDS = 60
CLUSTER_SLOTS = 16384
# A cluster node's replies that the client's slot map is old (a failover, a resharding).
_SLOT_MOVED = (
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


class NotReplicated(redis.RedisError):
    """A change the primary made but fewer replicas than wanted acknowledged in time: it may
    be lost if the primary fails now (SPEC "Durable changes"); repeating the request is safe."""

    def __init__(self, acknowledged: int, wanted: int) -> None:
        super().__init__(f"{acknowledged} of {wanted} replicas acknowledged the change")
        self.acknowledged = acknowledged
        self.wanted = wanted


class RedisConnection:
    """Commands to one Redis (every primary of a cluster), the way the store sends them.

    ``client`` is a ``redis.Redis`` (standalone, or Sentinel's ``master_for``) or a
    ``RedisCluster``, or a function that builds one: a cluster client connects as it is made,
    so it is made on first use and a cluster that is down at start-up is a 503, not a crash.
    With a ``redis.Redis``, each thread holds a single-connection client of the shared pool
    (``Redis.client()``): see :meth:`command`. ``wait_replicas`` and ``wait_timeout_ms`` are
    REDIS_WAIT_REPLICAS and REDIS_WAIT_TIMEOUT_MS (:meth:`run_durably`).
    """

    def __init__(
        self,
        client: Client | Callable[[], Client],
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        self._client = client if isinstance(client, redis.Redis | RedisCluster) else None
        self._connect = client if self._client is None else None
        self._connect_lock = threading.Lock()
        # decided once: isinstance against RedisCluster is slow (a typing.Generic subclass)
        self._standalone = client if isinstance(client, redis.Redis) else None
        self._threads = threading.local()
        self._pid = os.getpid()
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms

    @property
    def client(self) -> Client:
        """The shared client, built on first use when a builder was given."""
        if self._client is None:
            with self._connect_lock:
                if self._client is None:
                    try:
                        self._client = self._connect()
                    except redis.exceptions.RedisClusterException as error:
                        raise redis.ConnectionError(f"Redis Cluster unreachable: {error}") from None
        return self._client

    def close(self) -> None:
        """Close the client's connections, those the threads hold included (a client built
        from REDIS_URL belongs to the store; nothing is built just to be closed)."""
        client = self._client
        if client is None:
            return
        client.close()
        if isinstance(client, redis.Redis):
            client.connection_pool.disconnect()

    def scan_nodes(self) -> list[tuple[int, Callable[..., Any]]]:
        """Each node to SCAN, as (its first slot, a way to send it a command), in slot order:
        the one Redis outside a cluster, every primary of one."""
        client = self.client
        if not isinstance(client, RedisCluster):
            return [(0, self.command)]
        first_slots: dict[str, tuple[int, Any]] = {}
        for slot, nodes in client.nodes_manager.slots_cache.items():
            primary = nodes[0]
            if slot < first_slots.get(primary.name, (CLUSTER_SLOTS, None))[0]:
                first_slots[primary.name] = (slot, primary)
        return sorted(
            (slot, client.get_redis_connection(node).execute_command)
            for slot, node in first_slots.values()
        )

    def ping(self) -> bool:
        """True when Redis answers; raises redis.RedisError when it does not."""
        return bool(self.command("PING"))

    def eviction_policies(self) -> set[str] | None:
        """The ``maxmemory-policy`` of the Redis (every primary of a cluster), or None where
        CONFIG is refused (managed services rename or forbid it)."""
        client = self.client
        if isinstance(client, RedisCluster):
            nodes = [node.redis_connection for node in client.get_primaries()]
        else:
            nodes = [client]
        policies = set()
        for node in nodes:
            try:
                reported = node.config_get("maxmemory-policy")
            except redis.ResponseError:
                return None
            if "maxmemory-policy" not in reported:
                return None
            policies.add(reported["maxmemory-policy"])
        return policies

    def run_durably(self, mark: str, script: Script, keys: list[str], args: list[str | int]) -> Any:
        """Run a change's script (``keys`` all in ``mark``'s slot: one user's), then wait with
        Redis ``WAIT`` until the primary's replicas hold it (SPEC "Durable changes"); the
        script's reply.

        ``WAIT`` counts the replicas that acknowledged the last write made *on the connection
        it is sent on*, so everything goes down one connection to the primary of the user's
        slot: the script, a write of ``mark`` (the user's ``replicated`` key, so that the
        awaited write is the latest even when the script changed nothing, as when a change that
        was not confirmed is repeated: the primary already has it, its replicas may not), and
        ``INFO replication`` in one round trip, then ``WAIT`` for REDIS_WAIT_REPLICAS or every
        online replica when fewer are attached, in a second. With no replica attached (as right
        after a failover) or REDIS_WAIT_REPLICAS=0 there is no second round trip; with 0, no
        mark.

        Raises :class:`NotReplicated` when fewer acknowledge within REDIS_WAIT_TIMEOUT_MS (the
        change is made on the primary; running it again is safe and waits again).
        """
        if not self._wait_replicas:
            return self.run(script, keys, args)
        client = self._standalone
        if client is not None:
            try:
                return self._change_and_wait(client, script, keys, args, mark)
            except redis.ConnectionError:  # a broken connection, a demoted primary: once more
                return self._change_and_wait(client, script, keys, args, mark)
        cluster = self.client
        try:
            node = cluster.get_redis_connection(cluster.get_node_from_key(mark))
            return self._change_and_wait(node, script, keys, args, mark)
        except (redis.ConnectionError, redis.exceptions.RedisClusterException, *_SLOT_MOVED):
            # The slot map is old (a failover, a resharding): the routed run follows the
            # redirections and refreshes the map, then the change is made and awaited again
            # on the primary the slot has now.
            self.run(script, keys, args)
        try:
            node = cluster.get_redis_connection(cluster.get_node_from_key(mark))
            return self._change_and_wait(node, script, keys, args, mark)
        except (redis.exceptions.RedisClusterException, *_SLOT_MOVED) as error:
            raise redis.ConnectionError(f"Redis Cluster slot moving: {error}") from None

    def _change_and_wait(
        self,
        node: redis.Redis,
        script: Script,
        keys: list[str],
        args: list[str | int],
        mark: str,
    ) -> Any:
        """:meth:`run_durably` on one connection of ``node``'s pool (checked out for it)."""
        change = ["EVALSHA", script.sha, len(keys), *keys, *args]
        batch = [change, ["SET", mark, "1", "EX", MARK_SECONDS], ["INFO", "replication"]]
        with node.client() as single:
            connection = single.connection
            try:
                replies = _exchange(connection, batch)
                if isinstance(replies[0], redis.exceptions.NoScriptError):
                    change[:2] = ["EVAL", script.source]  # EVAL also caches it there
                    replies = _exchange(connection, batch)
                for answer in replies:
                    if isinstance(answer, redis.ResponseError):
                        raise answer
                reply, _, info = replies
                wanted = min(self._wait_replicas, _online_replicas(info))
                if wanted:
                    timeout = self._wait_timeout_ms / 1000 + (connection.socket_timeout or 1.0)
                    connection.send_command("WAIT", wanted, self._wait_timeout_ms)
                    acknowledged = int(connection.read_response(timeout=timeout))
                    if acknowledged < wanted:
                        raise NotReplicated(acknowledged, wanted)
                return reply
            except (redis.ResponseError, NotReplicated):
                raise
            except BaseException:
                connection.disconnect()  # out of step with its replies: never reused as is
                raise

    def run(self, script: Script, keys: list[str], args: list[str | int]) -> Any:
        """EVALSHA; EVAL when this Redis does not know the script (yet, or any more: a restart,
        SCRIPT FLUSH or a failover to a node that never saw it), which also caches it there."""
        try:
            return self.command("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self.command("EVAL", script.source, len(keys), *keys, *args)

    def command(self, *args: str | int) -> Any:
        """One command, one round trip.

        A cluster client routes it by key (following MOVED/ASK, refreshing its slot map and
        retrying after a failover). Otherwise the command goes down this thread's connection,
        checked out of the client's pool once (``Redis.client()``), and its reply is taken as
        the parser gives it (the commands here need no response callbacks): redis-py's
        per-command wrapper (retry loop, metrics hooks, callbacks) costs a third of the
        allowlist check's CPU, more than a request can spare (BENCHMARKS.md). When that
        connection breaks (Redis restarted, a failover, an idle connection dropped), the
        command is sent once more on a fresh checkout, which connects anew with the pool's
        retry and backoff and, under Sentinel, asks where the primary is now; every script
        of utils/redis_scripts.py is safe to run twice. A timeout is not resent.
        """
        client = self._standalone
        if client is None:
            try:
                return self.client.execute_command(*args)
            except redis.exceptions.RedisClusterException as error:  # e.g. no node reachable
                raise redis.ConnectionError(f"Redis Cluster unavailable: {error}") from None
        try:
            return self._send(client, args)
        except redis.ConnectionError:
            return self._send(client, args)

    def _send(self, client: redis.Redis, args: tuple[str | int, ...]) -> Any:
        """Send on this thread's connection; on any failure but an error reply (which leaves
        the connection in step) hand the connection back to the pool, disconnected."""
        if self._pid != os.getpid():  # a forked child never uses its parent's connections
            self._threads, self._pid = threading.local(), os.getpid()
        try:
            single = self._threads.client
        except AttributeError:
            single = self._threads.client = client.client()
        connection = single.connection
        try:
            connection.send_command(*args)
            return connection.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            del self._threads.client
            connection.disconnect()
            single.close()
            raise


def _exchange(connection: AbstractConnection, commands: list[list[str | int]]) -> list[Any]:
    """Send ``commands`` in one write and read each reply (an error reply as its exception,
    so that the connection stays in step)."""
    connection.send_packed_command(connection.pack_commands(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(connection.read_response())
        except redis.ResponseError as error:
            replies.append(error)
    return replies


def _online_replicas(info: str | bytes) -> int:
    """How many replicas ``INFO replication`` lists as online (``WAIT`` counts no others)."""
    text = info.decode() if isinstance(info, bytes) else info
    return sum(
        1 for line in text.splitlines() if line.startswith("slave") and "state=online" in line
    )
