"""The allowlist cache (utils/allowlist_cache.py) against a real redis-server: answers are
reused only while Redis reports no change and the tracking connection is proven alive, every
doubt sends the check back to Redis, and no check waits for the tracking connection."""

from __future__ import annotations

import os
import selectors
import socket
import statistics
import threading
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
from utils.allowlist_cache import AllowlistCache
from utils.redis import RedisStore

PREFIX = "cache-test:"


def exists_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_exists", {}).get("calls", 0))


def cached_store(client: redis.Redis, **environ: str) -> RedisStore:
    """A store with the cache, once its tracking connection is up (it connects in the
    background)."""
    settings = load_settings({**DEV_ENV, "REDIS_KEY_PREFIX": PREFIX, **environ})
    cache = build_allowlist_cache(settings, client)
    assert wait_until(lambda: cache.current() is not None, timeout=5, interval=0.01)
    return RedisStore(client, PREFIX, cache)


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
        real_redis.pexpire(store.layout.key(pair.username, "token", pair.access_jti), 20)
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
    """A change Redis reported, and the cache applied, while the answer was on its way may
    postdate it."""
    settings = load_settings(DEV_ENV)
    cache = build_allowlist_cache(settings, real_redis)
    try:
        assert wait_until(lambda: cache.current() is not None, timeout=5, interval=0.01)
        generation = cache.current()
        assert generation is not None
        real_redis.set(f"{settings.redis_key_prefix}unrelated", 1)
        assert wait_until(
            lambda: cache.current() not in (None, generation), timeout=5, interval=0.01
        )
        cache.remember("jwt:a", "jwt:s", generation)
        assert not cache.holds("jwt:a", "jwt:s")
        cache.remember("jwt:a", "jwt:s", cache.current())
        assert cache.holds("jwt:a", "jwt:s")
    finally:
        cache.close()


def test_a_lost_tracking_connection_sends_every_check_to_redis(worker, other_worker, real_redis):
    pair = make_pair()
    record(worker, pair)
    remember(worker, pair, real_redis)
    killed = pubsub_ids(real_redis)
    real_redis.client_kill_filter(_type="pubsub")  # the tracking connection
    other_worker.end_session(pair.username, pair.session_id)  # a change it will never carry
    assert not active(worker, pair, pair.access_jti)

    fresh = make_pair()
    record(worker, fresh)
    remember(worker, fresh, real_redis)  # tracking is back, on a new connection
    assert pubsub_ids(real_redis) - killed


def pubsub_ids(client: redis.Redis) -> set[str]:
    return {c["id"] for c in client.client_list(_type="pubsub")}


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
    settings = load_settings({**DEV_ENV, "REDIS_KEY_PREFIX": PREFIX})
    store = RedisStore(client, PREFIX, build_allowlist_cache(settings, client))
    pair = make_pair()
    record(store, pair)
    assert active(store, pair, pair.access_jti) and active(store, pair, pair.access_jti)
    store.end_session(pair.username, pair.session_id)
    assert not active(store, pair, pair.access_jti)


class FreezableProxy:
    """A loopback TCP proxy to redis-server that can stop forwarding in both directions
    without closing anything, as a NAT or firewall that silently dropped the flow: bytes sent
    either way then just vanish into the kernel's buffers. Connections accepted while frozen
    hang the same way. One thread, ended by :meth:`close`."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.accepted = 0
        self._frozen = threading.Event()
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        self._frozen.set()

    def unfreeze(self) -> None:
        self._frozen.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in [self._listener, *self._peers]:
            sock.close()
        self._selector.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.01):
                if key.fileobj is self._listener:
                    self._accept()
                elif not self._frozen.is_set():
                    self._forward(key.fileobj)
            if self._frozen.is_set():
                self._stop.wait(0.01)  # readable sockets stay readable: do not spin

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        self.accepted += 1
        upstream = socket.create_connection(("127.0.0.1", self._upstream_port), timeout=5)
        self._peers[client], self._peers[upstream] = upstream, client
        for sock in (client, upstream):
            self._selector.register(sock, selectors.EVENT_READ)

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers.get(sock)
        if peer is None:  # closed with its peer a moment ago
            return
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:  # reset, or the peer is gone: close both, as a proxy does
            pass
        for one in (sock, peer):
            self._selector.unregister(one)
            del self._peers[one]
            one.close()


@pytest.fixture
def proxy(redis_server) -> Iterator[FreezableProxy]:
    proxy = FreezableProxy(redis_server.port)
    yield proxy
    proxy.close()


def cache_through(proxy: FreezableProxy, max_age: float, socket_timeout: float) -> AllowlistCache:
    """A cache whose tracking connection goes through ``proxy`` (the checks do not)."""

    def open_connection() -> redis.Connection:
        return redis.Connection(
            host="127.0.0.1",
            port=proxy.port,
            protocol=2,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )

    return AllowlistCache(open_connection, PREFIX, max_age)


def test_pings_keep_a_cache_in_use_proven(proxy, real_redis):
    """Without a PING and its pong the proof would run out max_age after connecting; with
    them a cache in use stays usable (all but scheduling hiccups of a busy host)."""
    max_age = 0.3
    cache = cache_through(proxy, max_age, socket_timeout=1)
    try:
        assert wait_until(lambda: cache.current() is not None, timeout=5, interval=0.01)
        pings = int(real_redis.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))
        usable = []
        start = time.monotonic()
        while time.monotonic() - start < 10 * max_age:
            usable.append(cache.current() is not None)
            time.sleep(0.002)
        assert sum(usable) >= 0.9 * len(usable), f"{sum(usable)} of {len(usable)}"
        assert int(real_redis.info("commandstats")["cmdstat_ping"]["calls"]) - pings >= 5
    finally:
        cache.close()


def test_a_tracking_connection_gone_silent_stops_the_cache_within_max_age(
    proxy, other_worker, real_redis
):
    max_age = 0.5
    cache = cache_through(proxy, max_age, socket_timeout=0.5)
    store = RedisStore(real_redis, PREFIX, cache)
    try:
        assert wait_until(lambda: cache.current() is not None, timeout=5, interval=0.01)
        pair = make_pair()
        record(store, pair)
        remember(store, pair, real_redis)

        proxy.freeze()
        frozen_at = time.monotonic()
        other_worker.end_session(pair.username, pair.session_id)  # never reaches the cache
        assert wait_until(lambda: cache.current() is None, timeout=max_age + 0.2, interval=0.01)
        assert time.monotonic() - frozen_at < max_age + 0.2
        assert not active(store, pair, pair.access_jti)
        # Nothing is answered from memory, not even a token checked since
        fresh = make_pair()
        record(store, fresh)
        before = exists_calls(real_redis)
        assert all(active(store, fresh, fresh.access_jti) for _ in range(5))
        assert exists_calls(real_redis) - before == 5

        # The silent connection is dropped and another tried (it hangs: still frozen)
        assert wait_until(lambda: proxy.accepted >= 2, timeout=10, interval=0.01)
        assert cache.current() is None
        proxy.unfreeze()
        assert wait_until(
            lambda: (
                active(store, fresh, fresh.access_jti) and _answered_alone(store, fresh, real_redis)
            ),
            timeout=10,
            interval=0.01,
        )
        assert not active(store, pair, pair.access_jti)
    finally:
        cache.close()


def test_a_hanging_connect_never_holds_up_a_check(proxy):
    """The proxy accepts and never answers: the thread's connect hangs for its timeout,
    while checks go on without the cache and without waiting."""
    proxy.freeze()
    cache = cache_through(proxy, max_age=1, socket_timeout=5)
    took = []

    def check() -> int | None:
        start = time.perf_counter()
        generation = cache.current()
        cache.remember("jwt:a", "jwt:s", 0)
        took.append(time.perf_counter() - start)
        assert not cache.holds("jwt:a", "jwt:s")
        return generation

    try:
        assert check() is None  # the first use
        assert wait_until(lambda: proxy.accepted >= 1, timeout=5, interval=0.01)
        assert all(check() is None for _ in range(200))
        assert proxy.accepted == 1  # all of that during the one hanging connect
        assert statistics.median(took) < 0.001 and max(took) < 0.05, (
            statistics.median(took),
            max(took),
        )
    finally:
        proxy.unfreeze()
        cache.close()


def test_a_backlog_of_changes_is_applied_before_any_answer_is_used(
    worker, other_worker, real_redis
):
    """Thousands of changes queued on the connection: a check never uses an answer while
    some are unread (it asks Redis), and the cache comes back once they are read."""
    pair = make_pair()
    record(worker, pair)
    remember(worker, pair, real_redis)
    with real_redis.pipeline(transaction=False) as pipe:
        for i in range(5000):
            pipe.set(f"{PREFIX}noise:{i}", 1, ex=60)
        pipe.execute()
    for i in range(50):  # one message each: more than a request reads itself
        real_redis.set(f"{PREFIX}noise:{i}", 2, ex=60)
    other_worker.end_session(pair.username, pair.session_id)
    assert not active(worker, pair, pair.access_jti)
    fresh = make_pair()
    record(worker, fresh)
    remember(worker, fresh, real_redis)
    assert not active(worker, pair, pair.access_jti)


def test_a_forked_child_tracks_on_a_connection_of_its_own(worker, real_redis):
    pair = make_pair()
    record(worker, pair)
    remember(worker, pair, real_redis)
    ids = pubsub_ids(real_redis)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        try:
            fresh = make_pair()
            record(worker, fresh)
            remember(worker, fresh, real_redis)
            code = 0 if pubsub_ids(real_redis) - ids else 1  # answered from memory, on its own
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    remember(worker, make_pair_recorded(worker), real_redis)  # the parent's is untouched


def make_pair_recorded(store: RedisStore):
    pair = make_pair()
    record(store, pair)
    return pair
