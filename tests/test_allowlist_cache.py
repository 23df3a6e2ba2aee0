"""The allowlist cache (utils/allowlist_cache.py) against a real redis-server: answers are
reused only while Redis reports no change, and every doubt sends the check back to Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from devtools.processes import wait_until
from initialize.config import load_settings
from initialize.redis import build_allowlist_cache
from tests.conftest import DEV_ENV
from tests.test_redis_store import active
from tests.test_redis_store import make_pair
from tests.test_redis_store import record
from utils import allowlist_cache
from utils.redis import RedisStore

PREFIX = "cache-test:"


def exists_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_exists", {}).get("calls", 0))


def cached_store(client: redis.Redis, **environ: str) -> RedisStore:
    settings = load_settings({**DEV_ENV, "REDIS_KEY_PREFIX": PREFIX, **environ})
    return RedisStore(client, PREFIX, build_allowlist_cache(settings, client))


@pytest.fixture
def worker(real_redis) -> Iterator[RedisStore]:
    """A store as a worker holds it, with the cache on (the default)."""
    store = cached_store(real_redis)
    yield store
    store.close()


@pytest.fixture
def other_worker(redis_server) -> Iterator[RedisStore]:
    """A second process's view: its own client, no cache."""
    store = RedisStore(redis.Redis.from_url(redis_server.url, decode_responses=True), PREFIX)
    yield store
    store.close()


def remember(store: RedisStore, pair, client: redis.Redis) -> None:
    """Check until the answer is remembered (the first check after the token's own writes
    may not be: Redis reports those writes too), and prove it is."""
    assert wait_until(
        lambda: active(store, pair, pair.access_jti) and _answered_alone(store, pair, client),
        timeout=5,
        interval=0.01,
    )


def _answered_alone(store: RedisStore, pair, client: redis.Redis) -> bool:
    before = exists_calls(client)
    return active(store, pair, pair.access_jti) and exists_calls(client) == before


def test_a_known_active_token_is_checked_without_a_round_trip(worker, real_redis):
    pair = make_pair()
    record(worker, pair)
    before = exists_calls(real_redis)
    assert all(active(worker, pair, pair.access_jti) for _ in range(20))
    assert exists_calls(real_redis) - before <= 2  # the first answer may predate a report


def test_a_revocation_elsewhere_is_seen_on_the_next_check(worker, other_worker, real_redis):
    """No sleep: Redis has sent the change before it answered the revoking command."""
    for _ in range(30):
        pair = make_pair()
        record(worker, pair)
        remember(worker, pair, real_redis)
        other_worker.end_session(pair.username, pair.session_id)
        assert not active(worker, pair, pair.access_jti)


def test_an_unknown_or_revoked_token_is_never_remembered(worker, real_redis):
    pair = make_pair()
    before = exists_calls(real_redis)
    assert not active(worker, pair, pair.access_jti)
    assert not active(worker, pair, pair.access_jti)
    assert exists_calls(real_redis) - before == 2


def test_a_flush_forgets_every_answer(worker, real_redis):
    pair = make_pair()
    record(worker, pair)
    remember(worker, pair, real_redis)
    real_redis.flushdb()
    assert not active(worker, pair, pair.access_jti)


def test_an_expired_record_is_forgotten(real_redis):
    """Redis reports a key it expired (its active expiry finds it within a second or so),
    long before the answer's own age runs out."""
    store = cached_store(real_redis, ALLOWLIST_CACHE_SECONDS="60")
    try:
        pair = make_pair()
        record(store, pair)
        remember(store, pair, real_redis)
        real_redis.pexpire(store.key(pair.username, "token", pair.access_jti), 20)
        assert wait_until(
            lambda: not active(store, pair, pair.access_jti), timeout=10, interval=0.01
        )
    finally:
        store.close()


def test_answers_are_reused_for_max_age_at_most(real_redis):
    store = cached_store(real_redis, ALLOWLIST_CACHE_SECONDS="0.2")
    try:
        pair = make_pair()
        record(store, pair)
        remember(store, pair, real_redis)
        time.sleep(0.3)
        before = exists_calls(real_redis)
        assert active(store, pair, pair.access_jti)
        assert exists_calls(real_redis) - before == 1
    finally:
        store.close()


def test_an_answer_fetched_across_a_change_is_not_kept(real_redis):
    """A change Redis reported while the answer was on its way may postdate it."""
    cache = build_allowlist_cache(load_settings(DEV_ENV), real_redis)
    try:
        generation = cache.current()
        assert generation is not None
        real_redis.set(f"{load_settings(DEV_ENV).redis_key_prefix}unrelated", 1)
        time.sleep(0.05)  # the invalidation is in the socket
        cache.remember("jwt:a", "jwt:s", generation)
        assert not cache.holds("jwt:a", "jwt:s")
        cache.remember("jwt:a", "jwt:s", cache.current())
        assert cache.holds("jwt:a", "jwt:s")
    finally:
        cache.close()


def test_a_lost_tracking_connection_sends_every_check_to_redis(
    worker, other_worker, real_redis, monkeypatch
):
    monkeypatch.setattr(allowlist_cache, "RETRY_SECONDS", 0.3)
    pair = make_pair()
    record(worker, pair)
    remember(worker, pair, real_redis)
    real_redis.client_kill_filter(_type="pubsub")  # the tracking connection
    other_worker.end_session(pair.username, pair.session_id)  # a change it will never carry
    assert not active(worker, pair, pair.access_jti)

    fresh = make_pair()
    record(worker, fresh)
    before = exists_calls(real_redis)
    assert active(worker, fresh, fresh.access_jti) and active(worker, fresh, fresh.access_jti)
    assert exists_calls(real_redis) - before == 2  # no cache until the retry
    time.sleep(0.35)
    remember(worker, fresh, real_redis)  # tracking is back


def test_zero_seconds_and_other_topologies_have_no_cache(real_redis, sentinel_redis):
    assert build_allowlist_cache(load_settings(DEV_ENV), real_redis) is not None
    off = load_settings({**DEV_ENV, "ALLOWLIST_CACHE_SECONDS": "0"})
    assert build_allowlist_cache(off, real_redis) is None
    sentinel = load_settings(
        {**DEV_ENV, "REDIS_MODE": "sentinel", "REDIS_SENTINELS": "127.0.0.1:1"}
    )
    assert build_allowlist_cache(sentinel, real_redis) is None
    # a Sentinel client's connections find their server themselves: no cache for it either
    assert build_allowlist_cache(load_settings(DEV_ENV), sentinel_redis) is None


def test_a_server_refusing_tracking_is_asked_every_time():
    """fakeredis has no CLIENT TRACKING: the check asks it each time and stays right."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    store = cached_store(client)
    pair = make_pair()
    record(store, pair)
    assert active(store, pair, pair.access_jti) and active(store, pair, pair.access_jti)
    store.end_session(pair.username, pair.session_id)
    assert not active(store, pair, pair.access_jti)
