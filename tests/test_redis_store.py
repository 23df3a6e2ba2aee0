"""utils.redis: the allowlist's keys, TTLs, rotation and revocation, without Flask."""

from __future__ import annotations

import re
import threading
import time
import uuid

import pytest
import redis

from devtools.processes import wait_until
from tests.conftest import service_client
from utils import redis as redis_store
from utils import redis_connection
from utils import redis_scripts
from utils.net import Caller
from utils.redis import RedisStore
from utils.redis import Rotation
from utils.redis_scripts import Script
from utils.tokens import TokenPair


def make_pair(
    username: str = "kesa",
    session_id: str | None = None,
    access_ttl: int = 900,
    refresh_ttl: int = 604800,
) -> TokenPair:
    now = int(time.time())
    return TokenPair(
        username=username,
        session_id=session_id or str(uuid.uuid4()),
        csrf="c",
        access_token="a",
        access_jti=str(uuid.uuid4()),
        access_exp=now + access_ttl,
        refresh_token="r",
        refresh_jti=str(uuid.uuid4()),
        refresh_exp=now + refresh_ttl,
    )


def record(store: RedisStore, pair: TokenPair, *args, **options) -> bool:
    """A login's recording of ``pair``: the account exists (created if need be, version 0)."""
    store.create_user(pair.username, "hash")
    return store.record_tokens(pair, *args, account_version=0, **options)


@pytest.fixture
def store(redis_client) -> RedisStore:
    return RedisStore(redis_client, "test:")


def active(store: RedisStore, pair: TokenPair, jti: str) -> bool:
    """The allowlist check for a token of ``pair``'s session."""
    return store.is_token_active(pair.username, pair.session_id, jti)


def assert_every_key_expires_with_its_token(client, horizon: int) -> None:
    """SPEC: all keys but accounts have 0 < TTL <= the token's remaining life."""
    for key in client.keys("*"):
        if key.endswith("}:user"):
            continue
        assert 0 < client.ttl(key) <= horizon, key


def test_record_tokens_allowlists_both_until_their_exp(store, redis_client):
    pair = make_pair()
    record(store, pair)
    assert active(store, pair, pair.access_jti) and active(store, pair, pair.refresh_jti)
    assert redis_client.get(f"test:{{kesa}}:token:{pair.access_jti}") == "kesa"
    assert redis_client.expiretime(f"test:{{kesa}}:token:{pair.access_jti}") == pair.access_exp
    assert redis_client.expiretime(f"test:{{kesa}}:token:{pair.refresh_jti}") == pair.refresh_exp
    assert_every_key_expires_with_its_token(redis_client, 604800)
    assert all(key.startswith("test:") for key in redis_client.keys("*"))


def test_session_keys_never_outlive_the_last_token(store, redis_client):
    pair = make_pair(access_ttl=30, refresh_ttl=60)
    record(store, pair)
    assert_every_key_expires_with_its_token(redis_client, 60)


def test_rotation_spends_the_old_token_once(store, redis_client):
    first = make_pair()
    record(store, first)
    second = make_pair(session_id=first.session_id)
    assert (
        store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, second) is Rotation.ROTATED
    )
    assert not active(store, first, first.refresh_jti)
    assert active(store, second, second.access_jti) and active(store, second, second.refresh_jti)
    assert active(store, first, first.access_jti)  # rotation spends the refresh token only
    assert_every_key_expires_with_its_token(redis_client, 604800)


def test_reuse_ends_the_session_and_reports_it(store):
    first = make_pair()
    record(store, first)
    second = make_pair(session_id=first.session_id)
    store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, second)
    third = make_pair(session_id=first.session_id)
    assert (
        store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, third) is Rotation.REUSED
    )
    for jti in (first.access_jti, second.access_jti, second.refresh_jti, third.access_jti):
        assert not active(store, first, jti)


def test_unknown_refresh_token_is_revoked_not_reused(store):
    pair = make_pair()
    assert store.rotate_refresh_token(str(uuid.uuid4()), pair.refresh_exp, pair) is Rotation.REVOKED
    assert not active(store, pair, pair.access_jti)


def test_end_session_and_end_all_sessions(store, redis_client):
    pairs = [make_pair() for _ in range(3)]
    for pair in pairs:
        record(store, pair)
    other = make_pair(username="erin")
    record(store, other)
    assert store.end_session("kesa", pairs[0].session_id) == 2
    assert not active(store, pairs[0], pairs[0].access_jti)
    assert active(store, pairs[1], pairs[1].access_jti)
    assert store.end_all_sessions("kesa") == 2
    assert not any(active(store, p, p.refresh_jti) for p in pairs)
    assert active(store, other, other.access_jti)
    assert redis_client.keys("test:{kesa}:sessions") == []


def test_login_attempts_count_and_expire(store, redis_client):
    assert store.begin_login("kesa", "127.0.0.1", 60).attempts == 1
    attempt = store.begin_login("kesa", "127.0.0.1", 60)
    assert (attempt.attempts, attempt.password_hash) == (2, None)
    assert 0 < attempt.retry_after <= 60
    record(store, make_pair(), Caller("127.0.0.1", "curl"), reset_failures=True)
    assert store.begin_login("kesa", "127.0.0.1", 60).attempts == 1


def test_create_user_is_first_come(store):
    assert store.create_user("kesa", "hash-1")
    assert not store.create_user("kesa", "hash-2")
    assert store.begin_login("kesa", "::1", 60).password_hash == "hash-1"
    assert store.user_exists("kesa") and not store.user_exists("nobody")


def test_concurrent_refreshes_with_one_token_exactly_one_wins(real_redis):
    """Atomicity on the real server: 16 threads race to spend one refresh token."""
    store = RedisStore(real_redis, "test:")
    first = make_pair()
    record(store, first)
    barrier = threading.Barrier(16)
    outcomes: list[Rotation] = []

    def race() -> None:
        barrier.wait(timeout=10)
        pair = make_pair(session_id=first.session_id)
        outcomes.append(store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, pair))

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert outcomes.count(Rotation.ROTATED) == 1
    # the losers presented a spent token: reuse, so the session (and the winner's pair) ends
    assert outcomes.count(Rotation.REUSED) == 15


def test_allowlist_checks_reuse_connections_across_short_lived_threads(redis_server, real_redis):
    """gevent makes a greenlet per HTTP connection: the check must not open one per caller."""
    client = redis.Redis.from_url(
        redis_server.url, decode_responses=True, max_connections=2, client_name="reuse-check"
    )
    store = RedisStore(client, "test:")
    pair = make_pair()
    record(store, pair)
    for _ in range(30):  # one short-lived thread after another, like greenlets
        thread = threading.Thread(target=lambda: active(store, pair, pair.access_jti))
        thread.start()
        thread.join(timeout=10)
    assert active(store, pair, pair.access_jti)
    ours = [c for c in real_redis.client_list() if c["name"] == "reuse-check"]
    assert 1 <= len(ours) <= 2


def test_close_ends_every_connection_the_store_holds(redis_server, real_redis):
    """Threads hold connections of their own (the lean allowlist path): close ends those too."""
    client = redis.Redis.from_url(redis_server.url, client_name="closing-store")
    store = RedisStore(client, "test:")
    pair = make_pair()
    record(store, pair)
    threads = [
        threading.Thread(target=lambda: active(store, pair, pair.access_jti)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    def ours() -> int:
        return sum(c["name"] == "closing-store" for c in real_redis.client_list())

    assert ours() >= 2
    store.close()
    assert wait_until(lambda: ours() == 0, timeout=5, interval=0.05)


def test_allowlist_check_survives_a_dropped_connection(redis_server, real_redis):
    store = RedisStore(service_client(redis_server.url), "test:")
    pair = make_pair()
    record(store, pair)
    assert active(store, pair, pair.access_jti)
    real_redis.client_kill_filter(_type="normal", skipme=True)  # Redis drops every other client
    assert active(store, pair, pair.access_jti)


def test_scripts_survive_a_dropped_connection(redis_server, real_redis):
    store = RedisStore(service_client(redis_server.url), "test:")
    first = make_pair()
    record(store, first)
    real_redis.client_kill_filter(_type="normal", skipme=True)
    second = make_pair(session_id=first.session_id)
    assert store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, second) is (
        Rotation.ROTATED
    )
    assert active(store, second, second.refresh_jti)


def test_scripts_are_reloaded_when_redis_forgets_them(redis_server, real_redis):
    """A Redis restart or SCRIPT FLUSH empties the script cache; EVALSHA then says NOSCRIPT."""
    store = RedisStore(service_client(redis_server.url), "test:")
    first = make_pair()
    record(store, first)
    real_redis.script_flush()
    second = make_pair(session_id=first.session_id)
    assert store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, second) is (
        Rotation.ROTATED
    )
    assert store.end_session("kesa", first.session_id) == 3  # the NOSCRIPT reply left it in sync
    assert not active(store, second, second.access_jti)


def test_every_key_of_a_user_shares_one_cluster_slot(store, redis_client):
    """The hash tag: one user's keys hash alike, so each script's keys stay in one slot."""
    first = make_pair()
    record(store, first, Caller("::1", "pytest"), reset_failures=True)
    store.rotate_refresh_token(
        first.refresh_jti, first.refresh_exp, make_pair(session_id=first.session_id)
    )
    store.begin_login("kesa", "::1", 60)
    store.create_user("kesa", "hash")
    keys = redis_client.keys("test:*")
    assert len(keys) >= 7 and all(key.startswith("test:{kesa}:") for key in keys)


def test_a_resent_rotation_finds_its_own_work(store):
    """redis-py resends a script whose connection broke; if it had run, the resend must
    neither issue a second pair nor take the client's own retry for theft."""
    first = make_pair()
    record(store, first)
    second = make_pair(session_id=first.session_id)
    assert store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, second) is (
        Rotation.ROTATED
    )
    assert store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, second) is (
        Rotation.ROTATED
    )
    assert active(store, second, second.refresh_jti)
    thief = make_pair(session_id=first.session_id)  # anyone else presenting it again: theft
    assert store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, thief) is (
        Rotation.REUSED
    )
    assert not active(store, second, second.refresh_jti)
    # and the resend after the session ended gets no live pair either
    assert store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, second) is (
        Rotation.REVOKED
    )


def test_a_resent_create_user_still_reports_created(store):
    assert store.create_user("kesa", "salted-hash-1")
    assert store.create_user("kesa", "salted-hash-1")  # the same call, sent again
    assert not store.create_user("kesa", "salted-hash-2")


def test_an_ended_session_refuses_its_lingering_tokens(store, redis_client):
    """Ending a session deletes its record; the token records left behind are inert."""
    pair = make_pair()
    record(store, pair)
    store.end_session("kesa", pair.session_id)
    assert redis_client.exists(f"test:{{kesa}}:token:{pair.refresh_jti}")
    assert not active(store, pair, pair.access_jti)
    later = make_pair(session_id=pair.session_id)
    assert store.rotate_refresh_token(pair.refresh_jti, pair.refresh_exp, later) is (
        Rotation.REVOKED
    )
    assert not active(store, later, later.access_jti)
    assert_every_key_expires_with_its_token(redis_client, 604800)


def test_accounts_under_the_old_key_names_are_moved_on_first_use(store, redis_client):
    """Upgrade path: earlier versions kept accounts at ``<prefix>user:<name>``."""
    for name in ("ann", "ben", "cal"):
        redis_client.hset(f"test:user:{name}", mapping={"password": f"{name}-hash", "created": 7})
    assert store.begin_login("ann", "::1", 60).password_hash == "ann-hash"
    assert not store.create_user("ben", "another-hash")  # still taken
    assert store.user_exists("cal")
    for name in ("ann", "ben", "cal"):
        assert not redis_client.exists(f"test:user:{name}")
        assert redis_client.hgetall(f"test:{{{name}}}:user") == {
            "password": f"{name}-hash",
            "created": "7",
        }
    assert store.begin_login("ben", "::1", 60).password_hash == "ben-hash"
    assert store.begin_login("dan", "::1", 60).password_hash is None


def test_every_script_touches_only_the_keys_it_is_given():
    """Redis Cluster routes a script by its KEYS: a key built inside the script could live
    in another slot (or node) and is not declared to Redis. Every command's key is a KEYS[i]."""
    scripts = [value for value in vars(redis_scripts).values() if isinstance(value, Script)]
    assert len(scripts) == 11
    for script in scripts:
        calls = re.findall(r"redis\.call\('(\w+)',\s*([^,)]+)", script.source)
        # the one helper taking a key is called with KEYS[i] only
        calls += re.findall(r"(expire_no_earlier_than)\(([^,)]+)", script.source)
        assert calls
        for command, first_argument in calls:
            if first_argument == "key":  # inside expire_no_earlier_than(key, at)
                continue
            assert re.fullmatch(r"KEYS\[[^\]]+\]", first_argument), (command, first_argument)


def test_the_session_limit_ends_exactly_the_first_of_four_logins_in_one_second(redis_client):
    """Scores in whole seconds tie inside one second; the order is the order of issue."""
    clock_second = float(int(time.time()))
    store = RedisStore(redis_client, "test:", clock=lambda: clock_second)  # one frozen second
    for round_number in range(25):
        user = f"user-{round_number}"
        pairs = [make_pair(username=user) for _ in range(4)]
        for pair in pairs:
            assert record(store, pair, max_sessions=3)
        assert not active(store, pairs[0], pairs[0].access_jti), round_number
        assert all(active(store, pair, pair.access_jti) for pair in pairs[1:]), round_number
        live = {session.id for session in store.list_sessions(user)}
        assert live == {pair.session_id for pair in pairs[1:]}


def test_a_refresh_makes_a_session_the_most_recently_issued(store):
    first, second, third = (make_pair() for _ in range(3))
    for pair in (first, second, third):
        record(store, pair, max_sessions=3)
    again = make_pair(session_id=first.session_id)
    store.rotate_refresh_token(first.refresh_jti, first.refresh_exp, again)
    record(store, make_pair(), max_sessions=3)
    assert active(store, again, again.access_jti)
    assert not active(store, second, second.access_jti)
    assert active(store, third, third.access_jti)


def test_a_login_is_not_recorded_when_the_account_changed_since_its_check(store, redis_client):
    store.create_user("kesa", "old-hash")
    attempt = store.begin_login("kesa", "::1", 60)
    assert (attempt.password_hash, attempt.account_version) == ("old-hash", 0)
    assert store.change_account("kesa", {"password": "new-hash"}) == 0
    late = make_pair()
    assert not store.record_tokens(late, account_version=attempt.account_version)
    assert not active(store, late, late.access_jti)
    assert redis_client.keys(f"test:{{kesa}}:*{late.session_id}*") == []
    fresh = store.begin_login("kesa", "::1", 60)
    assert (fresh.password_hash, fresh.account_version) == ("new-hash", 1)
    assert store.record_tokens(make_pair(), account_version=fresh.account_version)


def test_a_login_for_an_account_that_went_is_not_recorded(store):
    pair = make_pair(username="nobody")
    assert not store.record_tokens(pair, account_version=0)
    assert not active(store, pair, pair.access_jti)


def test_a_change_ends_every_other_session_and_keeps_the_kept_one_refreshable(store, redis_client):
    kept, other = make_pair(), make_pair()
    record(store, kept)
    record(store, other)
    redis_client.set("test:{kesa}:login-failures:::1", 3, ex=60)
    ended = store.change_account(
        "kesa",
        {"password": "new-hash", "disabled": "1"},
        keep_session=kept.session_id,
        clear=["test:{kesa}:login-failures:::1"],
    )
    assert ended == 1
    assert redis_client.hmget("test:{kesa}:user", "password", "disabled", "version") == [
        "new-hash",
        "1",
        "1",
    ]
    assert not redis_client.exists("test:{kesa}:login-failures:::1")
    assert not active(store, other, other.access_jti)
    renewed = make_pair(session_id=kept.session_id)
    assert store.rotate_refresh_token(kept.refresh_jti, kept.refresh_exp, renewed) is (
        Rotation.ROTATED
    )
    assert store.change_account("kesa", {}, if_version=0) == redis_store.VERSION_MOVED
    assert store.change_account("nobody", {}) == redis_store.ACCOUNT_GONE


def test_a_refresh_of_a_session_from_before_a_change_ends_it(store, redis_client):
    """Defence in depth: a session that outlived a version change (here: put back by hand)
    cannot be refreshed; the refresh ends it."""
    pair = make_pair()
    record(store, pair)
    meta = f"test:{{kesa}}:session-meta:{pair.session_id}"
    redis_client.hset("test:{kesa}:user", "version", 7)
    later = make_pair(session_id=pair.session_id)
    assert store.rotate_refresh_token(pair.refresh_jti, pair.refresh_exp, later) is (
        Rotation.REVOKED
    )
    assert not active(store, pair, pair.access_jti) and not active(store, later, later.access_jti)
    assert not redis_client.exists(meta)


@pytest.mark.parametrize("redis_fixture", ["real_redis", "cluster_redis", "sentinel_redis"])
def test_durable_changes_answer_as_before_and_leave_only_an_expiring_mark(request, redis_fixture):
    """With REDIS_WAIT_REPLICAS=1 every durable change gives the answers it gives without, on
    a server without replicas, a cluster (the shard primary's own connection) and Sentinel."""
    client = request.getfixturevalue(redis_fixture)
    store = RedisStore(client, "test:", wait_replicas=1, wait_timeout_ms=2000)
    assert store.create_user("kesa", "hash")
    assert not store.create_user("kesa", "another hash")
    pairs = [make_pair() for _ in range(4)]
    for pair in pairs:
        record(store, pair)
    assert store.end_session("kesa", pairs[0].session_id) == 2
    assert store.end_own_session("kesa", pairs[1].session_id)
    assert not store.end_own_session("kesa", pairs[1].session_id)
    caller = Caller("::1", "")
    kept = pairs[3].session_id
    assert store.change_password("kesa", "new hash", kept, caller, account_version=0) == 1
    assert store.end_all_sessions("kesa") == 1
    assert store.end_all_sessions("kesa") == 0
    assert not any(active(store, p, p.access_jti) for p in pairs)
    assert client.hget("test:{kesa}:user", "password") == "new hash"
    assert 0 < client.ttl("test:{kesa}:replicated") <= redis_connection.MARK_SECONDS


def test_without_waiting_no_mark_is_written(store, redis_client):
    store.create_user("kesa", "hash")
    pair = make_pair()
    record(store, pair)
    store.end_session("kesa", pair.session_id)
    assert redis_client.exists("test:{kesa}:replicated") == 0


def test_only_online_replicas_are_waited_for():
    """A replica still loading its first copy cannot acknowledge anything: WAIT counts only
    those INFO replication lists as online."""
    info = (
        "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n"
        "slave0:ip=127.0.0.1,port=7001,state=online,offset=120,lag=0\r\n"
        "slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n"
        "slave2:ip=127.0.0.1,port=7003,state=online,offset=118,lag=1\r\n"
        "master_repl_offset:120\r\n"
    )
    online_replicas = redis_connection._online_replicas
    assert online_replicas(info) == 2
    assert online_replicas(info.encode()) == 2
    assert online_replicas("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n") == 0


def test_sessions_from_before_the_upgrade_keep_working_and_go_first(store, redis_client):
    """Sessions recorded before the order set and the account version existed: no order
    entry, no version in their meta. They refresh (version 0 on both sides) and the session
    limit ends them first."""
    old = make_pair()
    record(store, old)
    redis_client.delete("test:{kesa}:session-order")
    redis_client.hdel(f"test:{{kesa}}:session-meta:{old.session_id}", "version")
    renewed = make_pair(session_id=old.session_id)
    assert store.rotate_refresh_token(old.refresh_jti, old.refresh_exp, renewed) is (
        Rotation.ROTATED
    )
    redis_client.delete("test:{kesa}:session-order")  # as if the refresh came before, too
    newer = [make_pair() for _ in range(3)]
    for pair in newer:
        record(store, pair, max_sessions=3)
    assert not active(store, renewed, renewed.access_jti)
    assert all(active(store, pair, pair.access_jti) for pair in newer)


def test_every_way_a_session_ends_takes_it_out_of_the_order_set(store, redis_client):
    """So that a login at the limit reads only the oldest ids, with no sweep (utils/redis.py)."""
    pairs = [make_pair() for _ in range(4)]
    for pair in pairs:
        record(store, pair)
    store.end_session("kesa", pairs[0].session_id)
    store.end_own_session("kesa", pairs[1].session_id)
    spent = make_pair(session_id=pairs[2].session_id)
    store.rotate_refresh_token(pairs[2].refresh_jti, pairs[2].refresh_exp, spent)
    thief = make_pair(session_id=pairs[2].session_id)
    assert store.rotate_refresh_token(pairs[2].refresh_jti, pairs[2].refresh_exp, thief) is (
        Rotation.REUSED
    )
    assert redis_client.zrange("test:{kesa}:session-order", 0, -1) == [pairs[3].session_id]
    store.change_account("kesa", {"password": "new"})
    assert not redis_client.exists("test:{kesa}:session-order")
