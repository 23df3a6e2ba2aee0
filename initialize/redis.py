"""The Redis client: built from REDIS_URL in the factory, never at import time."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# A dead Redis must turn into a quick 503, not a request that hangs behind retries.
SOCKET_TIMEOUT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 1.0
HEALTH_CHECK_SECONDS = 30


def build_redis_client(url: str) -> redis.Redis:
    """One pooled, thread-safe client per process; redis-py resets the pool after fork."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        health_check_interval=HEALTH_CHECK_SECONDS,
        retry=Retry(NoBackoff(), 1),
    )
