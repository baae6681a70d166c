"""The Lua scripts of :class:`~daehwa.store.redis.RedisStore` for users and credentials.

They run after the prelude of :mod:`daehwa.store.redis_scripts` (``touch_user``,
``drop_conversation`` and the key names come from there), with the same
arguments first: TTL, slack, key prefix.
"""

from __future__ import annotations

# ARGV[4..]: uid, name, then field/value pairs.
CREATE_USER = r"""
local uid, name = ARGV[4], ARGV[5]
local head = user_key(uid)
local alias = P .. ':username:' .. name
if redis.call('EXISTS', head) == 1 or redis.call('EXISTS', alias) == 1 then return 0 end
redis.call('HSET', head, 'name', name)
for i = 6, #ARGV, 2 do redis.call('HSET', head, ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', head, TTL + SLACK)
redis.call('SET', alias, uid, 'PX', TTL + SLACK)
redis.call('SADD', P .. ':users', uid)
extend(P .. ':users', TTL + SLACK)
return 1
"""

# ARGV[4..]: 'id' or 'name', the id or name.
GET_USER = r"""
local uid = ARGV[5]
if ARGV[4] == 'name' then
  uid = redis.call('GET', P .. ':username:' .. ARGV[5])
  if not uid then return false end
end
if touch_user(uid) == 0 then return false end
return redis.call('HGETALL', user_key(uid))
"""

LIST_USERS = r"""
local found = {}
for _, uid in ipairs(redis.call('SMEMBERS', P .. ':users')) do
  if touch_user(uid) == 0 then
    redis.call('SREM', P .. ':users', uid)
  else
    found[#found + 1] = redis.call('HGETALL', user_key(uid))
  end
end
return found
"""

# ARGV[4..]: uid, key hash, ms to live, then field/value pairs.
# Returns 1, 0 when the hash is taken, -1 when the user is missing.
ADD_KEY = r"""
local uid, hash, ms = ARGV[4], ARGV[5], tonumber(ARGV[6])
if touch_user(uid) == 0 then return -1 end
local key = P .. ':key:' .. hash
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 'user_id', uid)
for i = 7, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', key, ms)
local keys = user_key(uid) .. ':keys'
redis.call('SADD', keys, hash)
extend(keys, ms)
return 1
"""

# ARGV[4..]: key hash, kind, now_us. The key's own deadline is its expires_us
# when that comes before the store's TTL.
USER_FOR_KEY = r"""
local key = P .. ':key:' .. ARGV[4]
local fields = redis.call('HMGET', key, 'user_id', 'kind', 'revoked', 'expires_us')
local uid, kind, revoked, expires = fields[1], fields[2], fields[3], fields[4]
if not uid or kind ~= ARGV[5] or revoked == '1' then return false end
local now = tonumber(ARGV[6])
local ms = TTL + SLACK
if expires and expires ~= '' then
  local left = math.floor((tonumber(expires) - now) / 1000)
  if left <= 0 then return false end
  if left < ms then ms = left end
end
if touch_user(uid) == 0 then return false end
if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
extend(user_key(uid) .. ':keys', ms)
return redis.call('HGETALL', user_key(uid))
"""

# ARGV[4]: key hash.
REVOKE_KEY = r"""
local key = P .. ':key:' .. ARGV[4]
if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'revoked', '1') end
return 1
"""

# ARGV[4]: uid.
DELETE_USER = r"""
local uid = ARGV[4]
local head = user_key(uid)
for _, cid in ipairs(redis.call('ZRANGE', head .. ':convs', 0, -1)) do
  drop_conversation(cid)
end
for _, hash in ipairs(redis.call('SMEMBERS', head .. ':keys')) do
  redis.call('DEL', P .. ':key:' .. hash)
end
local name = redis.call('HGET', head, 'name')
if name and redis.call('GET', P .. ':username:' .. name) == uid then
  redis.call('DEL', P .. ':username:' .. name)
end
redis.call('DEL', head, head .. ':convs', head .. ':keys')
redis.call('SREM', P .. ':users', uid)
return 1
"""
