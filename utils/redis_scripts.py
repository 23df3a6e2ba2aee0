"""The Lua scripts behind every change the store makes (utils/redis.py runs them), each with
what its KEYS and ARGV hold and what it returns.

Each multi-key change is one script, so that it is atomic; every script gets all the keys it
touches in KEYS (in a cluster they share one user's slot: utils/redis_keys.py) and is safe to
run twice: redis-py resends a command whose connection broke, and the script may have run
before it broke.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple


class Script(NamedTuple):
    """A Lua script and the SHA1 digest EVALSHA names it by."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        digest = hashlib.sha1(source.encode(), usedforsecurity=False)  # Redis's script name
        return cls(source, digest.hexdigest())


# KEYS[1..7] = access token, refresh token, session, user's sessions, session meta, account,
# session order; ARGV[1..9] = username, sid, now, access jti, access exp, refresh jti, refresh
# exp, client address, user agent.
_RECORD_PAIR = """
local function expire_no_earlier_than(key, at)
  if redis.call('EXPIRETIME', key) < at then redis.call('EXPIREAT', key, at) end
end
local function account_version()
  if redis.call('EXISTS', KEYS[6]) == 0 then return false end
  return redis.call('HGET', KEYS[6], 'version') or '0'
end
local function record_pair()
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[5])
  redis.call('SET', KEYS[2], ARGV[1], 'EXAT', ARGV[7])
  local latest = math.max(tonumber(ARGV[5]), tonumber(ARGV[7]))
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4], ARGV[7], ARGV[6])
  expire_no_earlier_than(KEYS[3], latest)
  redis.call('HSETNX', KEYS[5], 'createdAt', ARGV[3])
  redis.call('HSET', KEYS[5], 'refreshedAt', ARGV[3], 'expiresAt', ARGV[7],
             'clientAddress', ARGV[8], 'userAgent', ARGV[9])
  expire_no_earlier_than(KEYS[5], latest)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[3])
  redis.call('ZADD', KEYS[4], latest, ARGV[2])
  expire_no_earlier_than(KEYS[4], latest)
  local last = redis.call('ZRANGE', KEYS[7], -1, -1, 'WITHSCORES')
  redis.call('ZADD', KEYS[7], (tonumber(last[2]) or 0) + 1, ARGV[2])
  expire_no_earlier_than(KEYS[7], latest)
end
"""

# As _RECORD_PAIR, ARGV[10] = the account version read with the password hash, ARGV[11] = the
# most sessions a user may have, KEYS[8..] = failure counters a success clears
#   -> {0} when the account changed (or went) since its password was checked: nothing recorded;
#      else {1, the ids of the least recently issued sessions beyond the limit...} (their keys
#      are not known here, so the caller ends them). Every script that ends a session removes
#      it from the order set too; the ids of sessions that expired are dropped here, in a walk
#      over the set only when its size says some are left.
ISSUE = Script.of(
    _RECORD_PAIR
    + """
if account_version() ~= ARGV[10] then return {0} end
record_pair()
redis.call('HSET', KEYS[5], 'version', ARGV[10])
for i = 8, #KEYS do redis.call('DEL', KEYS[i]) end
local live = redis.call('ZCARD', KEYS[4])
if redis.call('ZCARD', KEYS[7]) ~= live then  -- drop the ids of sessions that ended since
  for _, sid in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
    if not redis.call('ZSCORE', KEYS[4], sid) then redis.call('ZREM', KEYS[7], sid) end
  end
end
local excess = live - tonumber(ARGV[11])
local beyond = {1}
if excess <= 0 then return beyond end
if redis.call('ZCARD', KEYS[7]) < live then  -- sessions recorded before the order set: oldest
  for _, sid in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    if #beyond <= excess and not redis.call('ZSCORE', KEYS[7], sid) then
      beyond[#beyond + 1] = sid
    end
  end
end
for _, sid in ipairs(redis.call('ZRANGE', KEYS[7], 0, excess)) do
  if #beyond <= excess and sid ~= ARGV[2] then beyond[#beyond + 1] = sid end
end
return beyond
"""
)

# As _RECORD_PAIR, and KEYS[8..9] = the presented refresh token's record and spent marker,
# ARGV[10..12] = its jti and exp, and the reuse grace window in seconds (0: none). A session
# issued under another account version than the account's (a change ended it, or should have)
# ends here and the token counts as revoked. A second run of the same rotation finds its own
# marker; a reuse within the window records the new pair in the still-live session (a resend
# of that records the same jtis again).
ROTATE = Script.of(
    _RECORD_PAIR
    + """
if redis.call('EXISTS', KEYS[3]) == 1
    and (redis.call('HGET', KEYS[5], 'version') or '0') ~= account_version() then
  redis.call('DEL', KEYS[3], KEYS[5])
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('ZREM', KEYS[7], ARGV[2])
  return 0
end
local spent = redis.call('GET', KEYS[9])
local spent_by, spent_at
if spent then spent_by, spent_at = string.match(spent, '^(%S+) (%d+)$') end
if spent_by == ARGV[6] then return redis.call('EXISTS', KEYS[3]) end
if redis.call('EXISTS', KEYS[3]) == 1 and redis.call('DEL', KEYS[8]) == 1 then
  redis.call('SET', KEYS[9], ARGV[6] .. ' ' .. ARGV[3], 'EXAT', ARGV[11])
  redis.call('ZREM', KEYS[3], ARGV[10])
  record_pair()
  return 1
end
if spent then
  local grace = tonumber(ARGV[12])
  if grace > 0 and spent_at and tonumber(ARGV[3]) - tonumber(spent_at) <= grace
      and redis.call('EXISTS', KEYS[3]) == 1 then
    record_pair()
    return 2
  end
  redis.call('DEL', KEYS[3], KEYS[5])
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('ZREM', KEYS[7], ARGV[2])
  return -1
end
return 0
"""
)

# KEYS = the user's sessions, session order, then each session's record and meta, in ARGV's
# sid order -> how many token records the sessions held.
END_SESSIONS = Script.of(
    """
local ended = 0
for i, sid in ipairs(ARGV) do
  ended = ended + redis.call('ZCARD', KEYS[2 * i + 1])
  redis.call('DEL', KEYS[2 * i + 1], KEYS[2 * i + 2])
  redis.call('ZREM', KEYS[1], sid)
  redis.call('ZREM', KEYS[2], sid)
end
return ended
"""
)

# KEYS = the user's sessions, session order, the session's record and meta; ARGV = sid, now
#   -> 1 when it was a live session of the user and ended, 0 when it was none.
END_OWN_SESSION = Script.of(
    """
local last_exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not last_exp or tonumber(last_exp) <= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
)

# KEYS = session metas -> their fields, as flat lists (read only).
READ_SESSIONS = Script.of(
    """
local listed = {}
for i, key in ipairs(KEYS) do listed[i] = redis.call('HGETALL', key) end
return listed
"""
)

# KEYS[1..4] = account, user's sessions, session order, the kept session's meta; then each
# ended session's record and meta in the sid order below; then keys to delete (counters).
# ARGV[1..5] = now, kept sid ('' for none), expected version ('' for any), F = how many field
# pairs, S = how many sids; then F field/value pairs to set; then S sids (every session of the
# user but the kept one, as read just before)
#   -> how many of those sessions were live (all end); -1 when the account is gone; -2 when
#      its version is not the expected one; -3 when the user has a session not in the list
#      (a login recorded since it was read: nothing changed, read again).
CHANGE_ACCOUNT = Script.of(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local now, keep = tonumber(ARGV[1]), ARGV[2]
local fields, count = tonumber(ARGV[4]), tonumber(ARGV[5])
local first_sid = 5 + 2 * fields
if ARGV[3] ~= '' and (redis.call('HGET', KEYS[1], 'version') or '0') ~= ARGV[3] then
  return -2
end
local listed = {}
for i = 1, count do listed[ARGV[first_sid + i]] = true end
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if sid ~= keep and not listed[sid] then return -3 end
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
for i = 1, fields do redis.call('HSET', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i]) end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HSET', KEYS[4], 'version', version) end
local live = 0
for i = 1, count do
  local sid = ARGV[first_sid + i]
  local last_exp = redis.call('ZSCORE', KEYS[2], sid)
  if last_exp and tonumber(last_exp) > now then live = live + 1 end
  redis.call('DEL', KEYS[3 + 2 * i], KEYS[4 + 2 * i])
  redis.call('ZREM', KEYS[2], sid)
  redis.call('ZREM', KEYS[3], sid)
end
for i = 5 + 2 * count, #KEYS do redis.call('DEL', KEYS[i]) end
return live
"""
)

# KEYS = the address's and the account's failure counters, account; ARGV = lock seconds
#   -> {attempts from the address in this window, its seconds left, the same for the account,
#       stored password hash or false, account version, disabled or false}
BEGIN_LOGIN = Script.of(
    """
local counted = {}
for i = 1, 2 do
  local attempts = redis.call('INCR', KEYS[i])
  local ttl = redis.call('TTL', KEYS[i])
  if ttl < 0 then
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  counted[2 * i - 1], counted[2 * i] = attempts, ttl
end
local account = redis.call('HMGET', KEYS[3], 'password', 'version', 'disabled')
counted[5], counted[6], counted[7] = account[1], account[2] or '0', account[3]
return counted
"""
)

# KEYS = a counter; ARGV = its window in seconds -> {count in this window, seconds left}
COUNT = Script.of(
    """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""
)

# KEYS = account; ARGV = password hash, created -> 1 when the account holds this very hash
# (created now, or by a first run of this same call: a salted hash is never made twice).
CREATE_USER = Script.of(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'password', ARGV[1], 'created', ARGV[2])
end
return redis.call('HGET', KEYS[1], 'password') == ARGV[1] and 1 or 0
"""
)

# KEYS = keys of one user to remove -> how many existed.
DELETE_KEYS = Script.of(
    """
local deleted = 0
for i = 1, #KEYS do deleted = deleted + redis.call('DEL', KEYS[i]) end
return deleted
"""
)

# KEYS = account -> 1 when it exists (and is enabled now), 0 when there is no account.
ENABLE = Script.of(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], 'disabled')
return 1
"""
)
