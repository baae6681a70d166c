"""The Lua scripts of :class:`~daehwa.store.redis.RedisStore`.

Each store operation is one script, so it is atomic (``seq`` needs no lock)
and costs one round trip (``update_message`` reads, then writes if unchanged).
The scripts of users and credentials are in :mod:`daehwa.store.redis_user_scripts`.
Every script starts with the same prelude:
``ARGV[1]`` is the TTL in ms, ``ARGV[2]`` the slack in ms, ``ARGV[3]`` the key
prefix; the operation's own arguments follow.

Keys are built inside the scripts, so the store needs a single Redis (or a
primary with replicas), not Redis Cluster.

Expiry: all keys of one conversation (its hash, its two indexes, its request
ids and every message) share one deadline. Any use of the conversation whose
remaining TTL is below ``ttl`` pushes the whole group to ``ttl + slack``; in
between, new keys join with the group's remaining TTL. A conversation thus
lives between ``ttl`` and ``ttl + slack`` after its last use, and the cost
of moving every message's deadline is paid at most once per ``slack``.
Users with their name, key set and conversation index form a second group.

Messages: each is one string, a JSON object that always starts with
``{"status":…,"seq":…,"created_us":…,"conversation_id":…`` in that order, so a
script can read or change the status and read the time and conversation
without decoding it (only search decodes a record, to match its content). A page of
messages is then one ``GET`` per message and one bulk string each on the wire.
Earlier versions stored a message as a hash of fields; such a hash is turned
into a record the first time a script reads it (``load_message``), keeping its
TTL, so old data stays readable without a separate migration step.
"""

from __future__ import annotations

PRELUDE = r"""
local TTL = tonumber(ARGV[1])
local SLACK = tonumber(ARGV[2])
local P = ARGV[3]

local function conv_key(cid) return P .. ':conv:' .. cid end
local function msg_key(mid) return P .. ':msg:' .. mid end
local function user_key(uid) return P .. ':user:' .. uid end

-- Give ``key`` at least ``ms`` to live; never shortens, fixes a missing TTL.
local function extend(key, ms)
  local t = redis.call('PTTL', key)
  if t == -1 or (t >= 0 and t < ms) then redis.call('PEXPIRE', key, ms) end
end

-- Refresh a conversation group when due. Returns its remaining ms, 0 if gone.
local function touch(cid)
  local head = conv_key(cid)
  local t = redis.call('PTTL', head)
  if t == -2 then return 0 end
  if t >= TTL then return t end
  local ms = TTL + SLACK
  redis.call('PEXPIRE', head, ms)
  redis.call('PEXPIRE', head .. ':seq', ms)
  redis.call('PEXPIRE', head .. ':time', ms)
  redis.call('PEXPIRE', head .. ':req', ms)
  for _, mid in ipairs(redis.call('ZRANGE', head .. ':seq', 0, -1)) do
    redis.call('PEXPIRE', msg_key(mid), ms)
  end
  extend(user_key(redis.call('HGET', head, 'user_id')) .. ':convs', ms)
  return ms
end

-- Refresh a user group when due. Returns its remaining ms, 0 if gone.
local function touch_user(uid)
  local head = user_key(uid)
  local t = redis.call('PTTL', head)
  if t == -2 then return 0 end
  if t >= TTL then return t end
  local ms = TTL + SLACK
  redis.call('PEXPIRE', head, ms)
  redis.call('PEXPIRE', P .. ':username:' .. redis.call('HGET', head, 'name'), ms)
  extend(head .. ':convs', ms)
  extend(head .. ':keys', ms)
  extend(P .. ':users', ms)
  return ms
end

local function drop_conversation(cid)
  local head = conv_key(cid)
  local uid = redis.call('HGET', head, 'user_id')
  for _, mid in ipairs(redis.call('ZRANGE', head .. ':seq', 0, -1)) do
    redis.call('DEL', msg_key(mid))
    redis.call('SREM', P .. ':streaming', mid)
  end
  redis.call('DEL', head .. ':seq', head .. ':time', head .. ':req')
  if uid then
    redis.call('DEL', head)
    redis.call('ZREM', user_key(uid) .. ':convs', cid)
  end
end

-- The record of a message written by an earlier version, from its hash fields
-- (role, content, ids, status, seq and created_us raw; the rest already JSON).
local function legacy_record(f)
  local parts = {
    '{"status":', cjson.encode(f.status or 'complete'),
    ',"seq":', f.seq or '0', ',"created_us":', f.created_us or '0',
    ',"conversation_id":', cjson.encode(f.conversation_id or ''),
    ',"id":', cjson.encode(f.id or ''),
    ',"role":', cjson.encode(f.role or 'user'),
    ',"content":', cjson.encode(f.content or ''),
  }
  for _, name in ipairs({'usage', 'tool_calls', 'tool_call_id', 'request_id', 'model'}) do
    parts[#parts + 1] = ',"' .. name .. '":'
    parts[#parts + 1] = f[name] or 'null'
  end
  parts[#parts + 1] = ',"metadata":'
  parts[#parts + 1] = f.metadata or '{}'
  parts[#parts + 1] = '}'
  return table.concat(parts)
end

-- A message's record, or false when it is missing; an old hash is rewritten
-- as a record in place, with the TTL it had.
local function load_message(mid)
  local key = msg_key(mid)
  local record = redis.pcall('GET', key)
  if type(record) ~= 'table' then return record end
  if not string.find(record.err, 'WRONGTYPE', 1, true) then error(record.err) end
  local flat = redis.call('HGETALL', key)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  record = legacy_record(fields)
  local ms = redis.call('PTTL', key)
  if ms <= 0 then ms = TTL + SLACK end
  redis.call('DEL', key)
  redis.call('SET', key, record, 'PX', ms)
  return record
end

local HEAD = '^{"status":"(%a+)","seq":%d+,"created_us":(%d+),"conversation_id":'

local function record_status(record)
  return (string.match(record, HEAD))
end

local function record_created(record)
  local _, created = string.match(record, HEAD)
  return tonumber(created)
end

local function record_conversation(record)
  local cid = string.match(record, HEAD .. '"([^"\\]*)"')
  if not cid then cid = cjson.decode(record).conversation_id end
  return cid
end

-- The record with another status (the status is always its first member).
local function with_status(record, status)
  local _, last = string.find(record, '^{"status":"%a+"')
  return '{"status":"' .. status .. '"' .. string.sub(record, last + 1)
end

local function track_streaming(mid, status)
  if status == 'streaming' then
    redis.call('SADD', P .. ':streaming', mid)
    extend(P .. ':streaming', TTL + SLACK)
  else
    redis.call('SREM', P .. ':streaming', mid)
  end
end

local function bump(head, now)
  local previous = tonumber(redis.call('HGET', head, 'updated_us'))
  if now <= previous then now = previous + 1 end
  local text = string.format('%d', now)
  redis.call('HSET', head, 'updated_us', text)
  return text
end

-- Store a new message; body is its record without status, seq and created_us,
-- or a table of fields in the hash layout of earlier versions.
-- Returns {1, seq, created_us}, {0} if the conversation is missing, {-1} if
-- the id is taken.
local function append(cid, mid, now, request, status, body)
  local t = touch(cid)
  if t == 0 then return {0} end
  local message = msg_key(mid)
  if redis.call('EXISTS', message) == 1 then return {-1} end
  local head = conv_key(cid)
  local seq = redis.call('HINCRBY', head, 'last_seq', 1)
  local created = bump(head, now)
  local record
  if type(body) == 'table' then
    body.status, body.seq, body.created_us, body.conversation_id = status, seq, created, cid
    body.id = mid
    record = legacy_record(body)
  else
    record = string.format('{"status":"%s","seq":%d,"created_us":%s,', status, seq, created)
      .. string.sub(body, 2)
  end
  redis.call('SET', message, record, 'PX', t)
  redis.call('ZADD', head .. ':seq', seq, mid)
  redis.call('PEXPIRE', head .. ':seq', t)
  redis.call('ZADD', head .. ':time', created, mid)
  redis.call('PEXPIRE', head .. ':time', t)
  if request ~= '' then
    redis.call('HSETNX', head .. ':req', request, mid)
    redis.call('PEXPIRE', head .. ':req', t)
  end
  if status == 'streaming' then track_streaming(mid, status) end
  local index = user_key(redis.call('HGET', head, 'user_id')) .. ':convs'
  redis.call('ZADD', index, created, cid)
  extend(index, t)
  return {1, seq, created}
end
"""

# ARGV[4..]: cid, uid, created_us, then field/value pairs.
CREATE_CONVERSATION = r"""
local cid, uid = ARGV[4], ARGV[5]
local head = conv_key(cid)
if redis.call('EXISTS', head) == 1 then return 0 end
redis.call('HSET', head, 'id', cid, 'user_id', uid, 'last_seq', 0)
redis.call('HSET', head, 'created_us', ARGV[6], 'updated_us', ARGV[6])
for i = 7, #ARGV, 2 do redis.call('HSET', head, ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', head, TTL + SLACK)
local index = user_key(uid) .. ':convs'
redis.call('ZADD', index, ARGV[6], cid)
extend(index, TTL + SLACK)
return 1
"""

# ARGV[4]: cid.
GET_CONVERSATION = r"""
if touch(ARGV[4]) == 0 then return false end
return redis.call('HGETALL', conv_key(ARGV[4]))
"""

# ARGV[4..]: cid, now_us, then field/value pairs.
UPDATE_CONVERSATION = r"""
local cid = ARGV[4]
if touch(cid) == 0 then return false end
local head = conv_key(cid)
for i = 6, #ARGV, 2 do redis.call('HSET', head, ARGV[i], ARGV[i + 1]) end
local updated = bump(head, tonumber(ARGV[5]))
redis.call('ZADD', user_key(redis.call('HGET', head, 'user_id')) .. ':convs', updated, cid)
return redis.call('HGETALL', head)
"""

# ARGV[4..]: uid, max score ('+inf' or a number), cursor id ('' for none), limit.
# Newest first; ties on updated_us come in descending id order, as in SQL.
LIST_CONVERSATIONS = r"""
local index = user_key(ARGV[4]) .. ':convs'
local top, after, limit = ARGV[5], ARGV[6], tonumber(ARGV[7])
local found, offset = {}, 0
while #found <= limit do
  local batch = redis.call(
    'ZREVRANGEBYSCORE', index, top, '-inf', 'WITHSCORES', 'LIMIT', offset, 100)
  if #batch == 0 then break end
  offset = offset + #batch / 2
  for i = 1, #batch, 2 do
    local cid, score = batch[i], batch[i + 1]
    local tie = after ~= '' and tonumber(score) == tonumber(top) and cid >= after
    if not tie and #found <= limit then
      if touch(cid) == 0 then
        redis.call('ZREM', index, cid)
        offset = offset - 1
      else
        found[#found + 1] = redis.call('HGETALL', conv_key(cid))
      end
    end
  end
end
return found
"""

# ARGV[4]: cid.
DELETE_CONVERSATION = r"""
drop_conversation(ARGV[4])
return 1
"""

# ARGV[4]: cid. Messages go; seq keeps counting.
CLEAR_CONVERSATION = r"""
local cid = ARGV[4]
if touch(cid) == 0 then return 0 end
local head = conv_key(cid)
for _, mid in ipairs(redis.call('ZRANGE', head .. ':seq', 0, -1)) do
  redis.call('DEL', msg_key(mid))
  redis.call('SREM', P .. ':streaming', mid)
end
redis.call('DEL', head .. ':seq', head .. ':time', head .. ':req')
redis.call('HSET', head, 'summary', '""', 'summary_seq', '0')
return 1
"""

# ARGV[4..]: cid, mid, now_us, request id ('' for none), status, then the
# record without status, seq and created_us (a JSON object: '{"conversation_id":…,…}'),
# or, instead of it, field/value pairs in the hash layout of earlier versions.
# Returns {1, seq, created_us}, {0} when the conversation is missing, {-1} when
# the message id is taken.
APPEND_MESSAGE = r"""
local body = ARGV[9]
if #ARGV > 9 then
  body = {}
  for i = 9, #ARGV, 2 do body[ARGV[i]] = ARGV[i + 1] end
end
return append(ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[8], body)
"""

# ARGV[4..]: now_us, then (cid, mid, request id, status, record) per message,
# as for APPEND_MESSAGE. All or none: every message is checked before any is
# stored. Returns {seq, created_us} per message, or {0, i} / {-1, i} (as
# APPEND_MESSAGE) for the message whose arguments start at ARGV[i].
APPEND_MESSAGES = r"""
local seen = {}
for i = 5, #ARGV, 5 do
  if redis.call('EXISTS', conv_key(ARGV[i])) == 0 then return {0, i} end
  local mid = ARGV[i + 1]
  if seen[mid] or redis.call('EXISTS', msg_key(mid)) == 1 then return {-1, i} end
  seen[mid] = true
end
local now = tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV, 5 do
  local result = append(ARGV[i], ARGV[i + 1], now, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
  out[#out + 1] = {result[2], result[3]}
end
return out
"""

# ARGV[4..]: mid, the record as the caller read it, the new record. The new
# record is stored only if the message still is what the caller read, so a
# change made meanwhile is never lost. Returns 1 when stored, the current
# record when it changed meanwhile (read again and retry), false when missing.
UPDATE_MESSAGE = r"""
local mid = ARGV[4]
local current = load_message(mid)
if not current then return false end
if current ~= ARGV[5] then return current end
touch(record_conversation(current))
redis.call('SET', msg_key(mid), ARGV[6], 'KEEPTTL')
track_streaming(mid, record_status(ARGV[6]))
return 1
"""

# ARGV[4]: mid.
GET_MESSAGE = r"""
local record = load_message(ARGV[4])
if not record then return false end
touch(record_conversation(record))
return record
"""

# ARGV[4..]: cid, request id.
FIND_BY_REQUEST_ID = r"""
if touch(ARGV[4]) == 0 then return false end
local mid = redis.call('HGET', conv_key(ARGV[4]) .. ':req', ARGV[5])
if not mid then return false end
return load_message(mid)
"""

# ARGV[4..]: cid, mode ('before' or 'since'), before ('+inf' or '(N'), since_us, limit.
# Returns the records of limit + 1 messages at most: newest first ('before'),
# oldest first ('since'). (Joining them into one JSON array here would double
# the script's time, spent on the one thread every client shares.)
LIST_MESSAGES = r"""
local cid, mode, before, since, limit = ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
if touch(cid) == 0 then return {} end
local head = conv_key(cid)
local ids
if mode == 'since' then
  ids = redis.call('ZRANGEBYSCORE', head .. ':time', since, '+inf', 'LIMIT', 0, limit + 1)
else
  ids = redis.call('ZREVRANGEBYSCORE', head .. ':seq', before, '-inf', 'LIMIT', 0, limit + 1)
end
local found = {}
for _, mid in ipairs(ids) do
  local record = load_message(mid)
  if record then found[#found + 1] = record end
end
return found
"""

# ARGV[4]: cid.
LAST_MESSAGE = r"""
if touch(ARGV[4]) == 0 then return false end
local ids = redis.call('ZREVRANGE', conv_key(ARGV[4]) .. ':seq', 0, 0)
if #ids == 0 then return false end
return load_message(ids[1])
"""

# ARGV[4..]: lower-cased needle, limit, then conversation ids. Matching ignores
# ASCII case only (string.lower works byte by byte), like SQLite's LIKE. A needle
# without characters JSON escapes occurs verbatim in the record of a message
# that contains it, so only records where it occurs are decoded.
SEARCH_MESSAGES = r"""
local needle, limit = ARGV[4], tonumber(ARGV[5])
local verbatim = not string.find(needle, '[%c"\\/]')
-- Without ASCII letters in the needle (most Korean queries) case does not matter.
local fold = string.find(needle, '%a') ~= nil
local found = {}
for i = 6, #ARGV do
  local taken = 0
  local ids = redis.call('ZREVRANGE', conv_key(ARGV[i]) .. ':seq', 0, -1)
  for _, mid in ipairs(ids) do
    if taken >= limit then break end
    local record = load_message(mid)
    local hay = record
    if record and fold then hay = string.lower(record) end
    if record and (not verbatim or string.find(hay, needle, 1, true)) then
      local content = cjson.decode(record).content
      if string.find(string.lower(content), needle, 1, true) then
        found[#found + 1] = record
        taken = taken + 1
      end
    end
  end
end
return found
"""

MARK_INTERRUPTED = r"""
local streaming = P .. ':streaming'
local count = 0
for _, mid in ipairs(redis.call('SMEMBERS', streaming)) do
  local record = load_message(mid)
  if record and record_status(record) == 'streaming' then
    redis.call('SET', msg_key(mid), with_status(record, 'incomplete'), 'KEEPTTL')
    count = count + 1
  end
end
redis.call('DEL', streaming)
return count
"""

# ARGV[4..]: message ids; those still streaming become incomplete.
MARK_THESE_INTERRUPTED = r"""
local count = 0
for i = 4, #ARGV do
  local mid = ARGV[i]
  local record = load_message(mid)
  if record and record_status(record) == 'streaming' then
    redis.call('SET', msg_key(mid), with_status(record, 'incomplete'), 'KEEPTTL')
    count = count + 1
  end
  redis.call('SREM', P .. ':streaming', mid)
end
return count
"""

# ARGV[4]: created_us bound (exclusive). Ids in P:streaming still streaming and older.
STREAMING_BEFORE = r"""
local found = {}
local bound = tonumber(ARGV[4])
for _, mid in ipairs(redis.call('SMEMBERS', P .. ':streaming')) do
  local record = load_message(mid)
  if record and record_status(record) == 'streaming' and record_created(record) < bound then
    found[#found + 1] = mid
  end
end
return found
"""
