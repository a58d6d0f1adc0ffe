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
-- ARGV[10], ARGV[11]: run_at and now as JSON; the other changing columns start empty
redis.call('HSET', k, 'j', j, '_s', 'queued', '_st', stream, '_c', created, '_k', idem,
  'status', '"queued"', 'attempts', '0', 'run_at', ARGV[10], 'lease_owner', 'null',
  'lease_expires_at', 'null', 'result', 'null', 'last_error', 'null', 'updated_at', ARGV[11],
  'finished_at', 'null')
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
-- ARGV[9]: the consumer's capabilities ('*': any; else space-separated), ARGV[10]: '1' if
-- they hold the capable-only marker (then tasks without capabilities are not taken),
-- ARGV[11]: kinds ('*': any; else space-separated). The ready streams that fit, highest
-- priority first, are chosen here from P:routes (members '<priority>|<kind>|<caps>').
local function set_of(text)
  if text == '*' then return nil end
  local t = {}
  for w in string.gmatch(text, '[^ ]+') do t[w] = true end
  return t
end
local offered, capable_only, kinds = set_of(ARGV[9]), ARGV[10] == '1', set_of(ARGV[11])
local fit = {}
for _, m in ipairs(redis.call('SMEMBERS', P .. ':routes')) do
  local a = string.find(m, '|', 1, true)
  local b = a and string.find(m, '|', a + 1, true)
  if b then
    local prio, kind, route = tonumber(string.sub(m, 1, a - 1)), string.sub(m, a + 1, b - 1),
      string.sub(m, b + 1)
    local ok = kinds == nil or kinds[kind] ~= nil
    if ok and offered ~= nil then
      if route == '' then
        ok = not capable_only
      else
        for c in string.gmatch(route, '[^ ]+') do
          if not offered[c] then ok = false break end
        end
      end
    end
    if ok then fit[#fit + 1] = {prio, P .. ':r:' .. m} end
  end
end
table.sort(fit, function(x, y) return x[1] > y[1] end)
local streams = {}
for i, f in ipairs(fit) do streams[i] = f[2] end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, 1000)) do
  local k = P .. ':t:' .. id
  redis.call('ZREM', P .. ':delayed', id)
  local s, st = unpack(redis.call('HMGET', k, '_s', '_st'))
  if s == 'queued' then redis.call('HSET', k, '_e', redis.call('XADD', st, '*', 'id', id)) end
end
local served, out = {}, {}
for _, st in ipairs(streams) do served[st] = true end
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
for _, st in ipairs(streams) do
  if #out >= limit then break end
  local res = redis.call('XREADGROUP', 'GROUP', 'netsuke', consumer, 'COUNT', limit - #out,
    'STREAMS', st, '>')
  if res then
    for _, entry in ipairs(res[1][2]) do
      local e, id = entry[1], entry[2][2]
      local k = P .. ':t:' .. id
      if redis.call('HGET', k, '_s') == 'queued' and redis.call('HGET', k, '_e') == e then
        lease(k, id, e)
      else  -- a stale entry (the task moved on): drop it
        redis.call('XACK', st, 'netsuke', e)
        redis.call('XDEL', st, e)
      end
    end
  end
end
-- each task as one JSON array of its hash's fields and values: one string to parse per task
local rows = {}
for i, k in ipairs(out) do rows[i] = cjson.encode(redis.call('HGETALL', k)) end
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
