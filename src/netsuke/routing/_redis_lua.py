"""The Lua scripts of the Redis Streams backend (each runs atomically in Redis).

Keys under the prefix ``P`` (default ``{netsuke}:q``: one hash tag, so one cluster slot):
``P:t:<id>`` the task (hash: ``j`` the fixed fields as JSON, one JSON value per changing column,
and ``_s`` status, ``_o`` lease owner, ``_x`` lease expiry ms, ``_st`` its stream, ``_e`` its
stream entry, ``_c`` created ms, ``_k`` idempotency key); ``P:all`` and ``P:s:<status>`` (sorted
sets by creation); ``P:delayed`` (by ``run_at``); ``P:leases`` (by lease expiry); ``P:i:<key>``
(idempotency); ``P:routes`` (the streams); ``P:r:<priority>|<kind>|<capabilities>`` the ready
streams, each with the consumer group ``netsuke``; ``P:dead`` the dead-letter stream.
"""

from __future__ import annotations

__all__ = ["EXTEND", "PURGE", "REQUEUE", "SETTLE", "SUBMIT", "TAKE"]

GROUP = "netsuke"

SUBMIT = """
local P, id, idem, j, created, run, now, stream, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4],
  ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9]
if idem ~= '' then
  local got = redis.call('GET', P .. ':i:' .. idem)
  if got then return {0, got} end
  redis.call('SET', P .. ':i:' .. idem, id)
end
local k = P .. ':t:' .. id
redis.call('HSET', k, 'j', j, '_s', 'queued', '_st', stream, '_c', created, '_k', idem)
for i = 10, #ARGV, 2 do redis.call('HSET', k, ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', P .. ':all', created, id)
redis.call('ZADD', P .. ':s:queued', created, id)
if redis.call('SADD', P .. ':routes', member) == 1 then
  pcall(redis.call, 'XGROUP', 'CREATE', stream, 'netsuke', '0', 'MKSTREAM')
end
if run <= now then
  redis.call('HSET', k, '_e', redis.call('XADD', stream, '*', 'id', id))
else
  redis.call('ZADD', P .. ':delayed', run, id)
end
return {1, id}
"""

TAKE = """
local P, consumer, now, exp, exp_json, now_json, owner_json, limit = ARGV[1], ARGV[2],
  tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, 1000)) do
  local k = P .. ':t:' .. id
  redis.call('ZREM', P .. ':delayed', id)
  local s, st = unpack(redis.call('HMGET', k, '_s', '_st'))
  if s == 'queued' then redis.call('HSET', k, '_e', redis.call('XADD', st, '*', 'id', id)) end
end
local served, out = {}, {}
for i = 9, #ARGV do served[ARGV[i]] = true end
local function lease(k, id, e)
  local s, c = unpack(redis.call('HMGET', k, '_s', '_c'))
  redis.call('ZREM', P .. ':s:' .. s, id)
  redis.call('ZADD', P .. ':s:leased', c, id)
  redis.call('HSET', k, '_s', 'leased', '_o', consumer, '_x', exp, '_e', e, 'status', '"leased"',
    'lease_owner', owner_json, 'lease_expires_at', exp_json, 'updated_at', now_json)
  redis.call('HINCRBY', k, 'attempts', 1)
  redis.call('ZADD', P .. ':leases', exp, id)
  out[#out + 1] = k
end
if limit > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', now, 'LIMIT', 0, 1000)) do
    if #out >= limit then break end
    local k = P .. ':t:' .. id
    local st, e = unpack(redis.call('HMGET', k, '_st', '_e'))
    if st and served[st] then
      -- the expired lease's pending entry moves to this consumer (its delivery count grows)
      redis.call('XCLAIM', st, 'netsuke', consumer, 0, e)
      lease(k, id, e)
    end
  end
end
for i = 9, #ARGV do
  if #out >= limit then break end
  local res = redis.call('XREADGROUP', 'GROUP', 'netsuke', consumer, 'COUNT', limit - #out,
    'STREAMS', ARGV[i], '>')
  if res then
    for _, entry in ipairs(res[1][2]) do
      local e, id = entry[1], entry[2][2]
      local k = P .. ':t:' .. id
      if redis.call('HGET', k, '_s') == 'queued' and redis.call('HGET', k, '_e') == e then
        lease(k, id, e)
      else  -- a stale entry (the task moved on): drop it
        redis.call('XACK', ARGV[i], 'netsuke', e)
        redis.call('XDEL', ARGV[i], e)
      end
    end
  end
end
local rows = {}
for i, k in ipairs(out) do rows[i] = redis.call('HGETALL', k) end
return rows
"""

_HOLDS = """
local function holds(k, consumer, now)
  local s, o, x = unpack(redis.call('HMGET', k, '_s', '_o', '_x'))
  return s == 'leased' and o == consumer and tonumber(x) > now
end
"""

SETTLE = (
    _HOLDS
    + """
local P, consumer, id, now, new, run = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5],
  tonumber(ARGV[6])
local k = P .. ':t:' .. id
if not holds(k, consumer, now) then return 0 end
for i = 7, #ARGV, 2 do redis.call('HSET', k, ARGV[i], ARGV[i + 1]) end
if new == 'leased' then return 1 end
local st, e, c = unpack(redis.call('HMGET', k, '_st', '_e', '_c'))
redis.call('XACK', st, 'netsuke', e)
redis.call('XDEL', st, e)
redis.call('ZREM', P .. ':leases', id)
redis.call('ZREM', P .. ':s:leased', id)
redis.call('ZADD', P .. ':s:' .. new, c, id)
redis.call('HSET', k, '_s', new)
redis.call('HDEL', k, '_o', '_x', '_e')
if new == 'queued' then
  if run <= now then
    redis.call('HSET', k, '_e', redis.call('XADD', st, '*', 'id', id))
  else
    redis.call('ZADD', P .. ':delayed', run, id)
  end
elseif new == 'dead' then
  redis.call('XADD', P .. ':dead', '*', 'id', id)
end
return 1
"""
)

EXTEND = (
    _HOLDS
    + """
local P, consumer, now, exp, exp_json = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local n = 0
for i = 6, #ARGV do
  local id = ARGV[i]
  local k = P .. ':t:' .. id
  if holds(k, consumer, now) then
    redis.call('HSET', k, '_x', exp, 'lease_expires_at', exp_json)
    redis.call('ZADD', P .. ':leases', exp, id)
    local st, e = unpack(redis.call('HMGET', k, '_st', '_e'))
    redis.call('XCLAIM', st, 'netsuke', consumer, 0, e, 'JUSTID')  -- resets its idle time
    n = n + 1
  end
end
return n
"""
)

REQUEUE = """
local P, id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local k = P .. ':t:' .. id
if redis.call('HGET', k, '_s') ~= 'dead' then return {} end
for i = 4, #ARGV, 2 do redis.call('HSET', k, ARGV[i], ARGV[i + 1]) end
local st, c = unpack(redis.call('HMGET', k, '_st', '_c'))
redis.call('ZREM', P .. ':s:dead', id)
redis.call('ZADD', P .. ':s:queued', c, id)
redis.call('HSET', k, '_s', 'queued', '_e', redis.call('XADD', st, '*', 'id', id))
return redis.call('HGETALL', k)
"""

PURGE = """
local P, status = ARGV[1], ARGV[2]
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local k = P .. ':t:' .. id
  if redis.call('HGET', k, '_s') == status then
    local idem = redis.call('HGET', k, '_k')
    if idem and idem ~= '' then redis.call('DEL', P .. ':i:' .. idem) end
    redis.call('DEL', k)
    redis.call('ZREM', P .. ':all', id)
    redis.call('ZREM', P .. ':s:' .. status, id)
    n = n + 1
  end
end
return n
"""
