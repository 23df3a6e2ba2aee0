"""The Redis client of REDIS_MODE, built in the factory, never at import time.

Standalone: ``Redis.from_url``. Sentinel: ``Sentinel(...).master_for(...)``, whose pool asks
the sentinels for the current primary whenever it hands out a connection that must connect,
and whose connections drop themselves the moment they meet a demoted primary (``READONLY``).
Cluster: ``RedisCluster``, which follows ``MOVED``/``ASK`` and refreshes its slot map after a
failover; it connects as it is made, so the store makes it on first use.

Every connection has a socket timeout, so a paused or hung Redis is a 503 in bounded time.
Connecting is retried twice on refusal, 0-250 ms apart, and the store resends a command whose
connection broke once (utils.redis_connection), which rides out a restart or the tail of a failover
inside one request (a 503 then takes 0.2-0.6 s when Redis is down); a timeout is not retried:
Redis is slow, and the request answers 503 now. (RedisCluster does retry a timed-out command,
after refreshing its slot map: it has no setting against it, so a paused cluster node costs
up to RETRIES + 1 socket timeouts.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from utils.allowlist_cache import AllowlistCache
from utils.redis import RedisStore
from utils.redis_connection import NOEVICTION
from utils.redis_connection import Client
from utils.settings import Settings

HEALTH_CHECK_SECONDS = 30
RETRIES = 2
RETRY_BASE_SECONDS = 0.05
RETRY_CAP_SECONDS = 0.25


def build_redis_client(settings: Settings) -> Client | Callable[[], Client]:
    """The client of ``settings.redis_mode`` (a builder for a cluster); one per process,
    thread-safe, and fork-safe: redis-py resets its pools in a forked child."""
    common = {
        "decode_responses": True,
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "health_check_interval": HEALTH_CHECK_SECONDS,
    }
    backoff = ExponentialWithJitterBackoff(base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS)
    if settings.redis_mode == "cluster":
        return lambda: RedisCluster.from_url(
            settings.redis_url, retry=Retry(backoff, RETRIES), **common
        )
    retry = Retry(backoff, RETRIES, supported_errors=(redis.ConnectionError,))
    if settings.redis_mode == "sentinel":
        url = parse_url(settings.redis_url)  # password, username, db, TLS: the primary's
        for address_only in ("host", "port", "connection_class"):
            url.pop(address_only, None)
        url["ssl"] = settings.redis_url.startswith("rediss://")
        # Each sentinel is asked once per discovery (the next one on failure); redis-py's
        # default of 10 retries per sentinel made a discovery with none answering take 50 s.
        asking = {k: v for k, v in common.items() if k.startswith("socket_")}
        asking["retry"] = Retry(NoBackoff(), 0)
        sentinel = Sentinel(list(settings.redis_sentinels), sentinel_kwargs=asking)
        return sentinel.master_for(settings.redis_sentinel_master, retry=retry, **common | url)
    return redis.Redis.from_url(settings.redis_url, retry=retry, **common)


def build_allowlist_cache(
    settings: Settings, client: Client | Callable[[], Client]
) -> AllowlistCache | None:
    """The allowlist cache (utils/allowlist_cache.py), in standalone mode: under Sentinel a
    tracking connection could outlive a failover on the demoted primary and never hear of
    a change, and a cluster would need one per primary; both ask Redis on every request."""
    pool = client.connection_pool if isinstance(client, redis.Redis) else None
    # Only a plain pool's settings name the one server its connections go to (a Sentinel
    # pool's connections ask the sentinels where to go): the tracking connection must reach
    # the server the checks ask.
    if (
        settings.redis_mode != "standalone"
        or settings.allowlist_cache_seconds <= 0
        or type(pool) is not redis.ConnectionPool
    ):
        return None

    def open_connection() -> redis.Connection:
        # RESP2, where invalidations arrive as pub/sub messages on the subscribed connection
        return pool.connection_class(**{**pool.connection_kwargs, "protocol": 2})

    return AllowlistCache(
        open_connection, settings.redis_key_prefix, settings.allowlist_cache_seconds
    )


def check_eviction_policy(store: RedisStore, logger: logging.Logger) -> None:
    """SPEC: an evicting Redis can revive revoked tokens or lose accounts; say so at start.

    A Redis that is down now is not an error here: requests answer 503 until it is back.
    """
    try:
        policies = store.redis.eviction_policies()
    except (redis.RedisError, redis.exceptions.RedisClusterException):
        return
    if policies is None:
        logger.warning("Redis refused CONFIG GET: the maxmemory-policy could not be checked")
    elif policies != {NOEVICTION}:
        logger.error(
            "Redis maxmemory-policy is %s, not noeviction: under memory pressure Redis may "
            "evict revoked-token markers or accounts",
            ", ".join(sorted(policies)),
        )
