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

_BULK = """
-- one command for many members (in slices: Lua's unpack has a limit); items flat
local function bulk(cmd, key, items, extra)
  for i = 1, #items, 1000 do
    if extra then
      redis.call(cmd, key, extra, unpack(items, i, math.min(i + 999, #items)))
    else
      redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
    end
  end
end
"""

SUBMIT = (
    _BULK
    + """
-- ARGV[1]: the prefix; ARGV[2]: the tasks as one JSON array (one call submits many: one fsync
-- for all; one argument, not nine per task, for the client to pack), each task an array of
-- strings: id, idempotency key ('' for none), the fixed fields as JSON, created (ms), run_at
-- (ms), its ready stream, that stream's member of P:routes, run_at and created as JSON.
-- Returns {created (1) or duplicate (0), id} per task, flat. Per task two commands (the hash,
-- the stream entry); the index sets get one command for all.
local P = ARGV[1]
local out, made, routes = {}, {}, {}
for _, t in ipairs(cjson.decode(ARGV[2])) do
  local id, idem, j, created, run, stream, member, run_json, now_json = t[1], t[2], t[3], t[4],
    tonumber(t[5]), t[6], t[7], t[8], t[9]
  local got = false
  if idem ~= '' then
    got = redis.call('GET', P .. ':i:' .. idem)
    if not got then redis.call('SET', P .. ':i:' .. idem, id) end
  end
  if got then
    out[#out + 1] = 0
    out[#out + 1] = got
  else
    if not routes[member] then
      routes[member] = true
      if redis.call('SADD', P .. ':routes', member) == 1 then
        pcall(redis.call, 'XGROUP', 'CREATE', stream, 'netsuke', '0', 'MKSTREAM')
      end
    end
    local e = ''
    if run <= tonumber(created) then
      e = redis.call('XADD', stream, '*', 'id', id)
    else
      redis.call('ZADD', P .. ':delayed', run, id)
    end
    -- the other changing columns start empty
    redis.call('HSET', P .. ':t:' .. id, 'j', j, '_s', 'queued', '_st', stream, '_c', created,
      '_k', idem, '_e', e, 'status', '"queued"', 'attempts', '0', 'run_at', run_json,
      'lease_owner', 'null', 'lease_expires_at', 'null', 'result', 'null', 'last_error', 'null',
      'updated_at', now_json, 'finished_at', 'null')
    made[#made + 1] = created
    made[#made + 1] = id
    out[#out + 1] = 1
    out[#out + 1] = id
  end
end
bulk('ZADD', P .. ':all', made)
bulk('ZADD', P .. ':s:queued', made)
return out
"""
)

TAKE = (
    _BULK
    + """
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
local served = {}
for _, st in ipairs(streams) do served[st] = true end
-- per leased task: one HMGET (what the lease needs and the reply shows) and one HSET; the
-- index moves are one command each for all
local COLS = {'j', '_s', '_c', 'attempts', 'run_at', 'result', 'last_error', 'finished_at', '_e',
  '_st'}
local rows, from, leased, leases = {}, {}, {}, {}
local function lease(k, id, e, v)
  local attempts = (tonumber(v[4]) or 0) + 1
  redis.call('HSET', k, '_s', 'leased', '_o', consumer, '_x', exp, '_e', e, 'status', '"leased"',
    'attempts', attempts, 'lease_owner', owner_json, 'lease_expires_at', exp_json, 'updated_at',
    now_json)
  from[v[2]] = from[v[2]] or {}
  table.insert(from[v[2]], id)
  leased[#leased + 1] = v[3]
  leased[#leased + 1] = id
  leases[#leases + 1] = exp
  leases[#leases + 1] = id
  -- the task as one JSON document (its fixed fields' JSON and each changing column's JSON
  -- value, spliced): one string for the client to parse
  rows[#rows + 1] = string.sub(v[1], 1, -2) .. ',"status":"leased","attempts":' .. attempts ..
    ',"run_at":' .. (v[5] or 'null') .. ',"lease_owner":' .. owner_json ..
    ',"lease_expires_at":' .. exp_json .. ',"result":' .. (v[6] or 'null') ..
    ',"last_error":' .. (v[7] or 'null') .. ',"updated_at":' .. now_json ..
    ',"finished_at":' .. (v[8] or 'null') .. '}'
end
if limit > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', now, 'LIMIT', 0, 1000)) do
    if #rows >= limit then break end
    local k = P .. ':t:' .. id
    local v = redis.call('HMGET', k, unpack(COLS))
    local e, st = v[9], v[10]
    if st and served[st] then
      -- the expired lease's pending entry moves to this consumer (its delivery count grows)
      redis.call('XCLAIM', st, 'netsuke', consumer, 0, e)
      lease(k, id, e, v)
    end
  end
end
for _, st in ipairs(streams) do
  if #rows >= limit then break end
  local res = redis.call('XREADGROUP', 'GROUP', 'netsuke', consumer, 'COUNT', limit - #rows,
    'STREAMS', st, '>')
  if res then
    for _, entry in ipairs(res[1][2]) do
      local e, id = entry[1], entry[2][2]
      local k = P .. ':t:' .. id
      local v = redis.call('HMGET', k, unpack(COLS))
      if v[2] == 'queued' and v[9] == e then
        lease(k, id, e, v)
      else  -- a stale entry (the task moved on): drop it
        redis.call('XACK', st, 'netsuke', e)
        redis.call('XDEL', st, e)
      end
    end
  end
end
for s, ids in pairs(from) do bulk('ZREM', P .. ':s:' .. s, ids) end
bulk('ZADD', P .. ':s:leased', leased)
bulk('ZADD', P .. ':leases', leases)
return '[' .. table.concat(rows, ',') .. ']'  -- one JSON array: one parse for the batch
"""
)

_HOLDS = """
local function holds(k, consumer, now)
  local s, o, x = unpack(redis.call('HMGET', k, '_s', '_o', '_x'))
  return s == 'leased' and o == consumer and tonumber(x) > now
end
"""

SETTLE = (
    _BULK
    + """
-- ARGV[1..3]: the prefix, the consumer, now (ms); ARGV[4]: the settles as one JSON array, each
-- {id, new status, run_at (ms, 0: none), {column, JSON value, column, JSON value, ...}}. One
-- call settles many (one fsync for all). Returns 1 (settled) or 0 (the consumer does not hold
-- the lease) per task. Per task an HMGET, an HSET and an HDEL; the stream entries and the
-- index sets get one command each for all.
local P, consumer, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out, acks, gone, into = {}, {}, {}, {}
for _, t in ipairs(cjson.decode(ARGV[4])) do
  local id, new, run, values = t[1], t[2], tonumber(t[3]), t[4]
  local k = P .. ':t:' .. id
  local v = redis.call('HMGET', k, '_s', '_o', '_x', '_st', '_e', '_c')
  if not (v[1] == 'leased' and v[2] == consumer and tonumber(v[3]) > now) then
    out[#out + 1] = 0
  elseif new == 'leased' then
    out[#out + 1] = 1
    if #values > 0 then redis.call('HSET', k, unpack(values)) end
  else
    out[#out + 1] = 1
    local st, e = v[4], v[5]
    values[#values + 1] = '_s'
    values[#values + 1] = new
    redis.call('HSET', k, unpack(values))
    redis.call('HDEL', k, '_o', '_x', '_e')
    acks[st] = acks[st] or {}
    table.insert(acks[st], e)
    gone[#gone + 1] = id
    into[new] = into[new] or {}
    table.insert(into[new], v[6])
    table.insert(into[new], id)
    if new == 'queued' then
      if run <= now then
        redis.call('HSET', k, '_e', redis.call('XADD', st, '*', 'id', id))
      else
        redis.call('ZADD', P .. ':delayed', run, id)
      end
    elseif new == 'dead' then
      redis.call('XADD', P .. ':dead', '*', 'id', id)
    end
  end
end
for st, es in pairs(acks) do
  bulk('XACK', st, es, 'netsuke')
  bulk('XDEL', st, es)
end
bulk('ZREM', P .. ':leases', gone)
bulk('ZREM', P .. ':s:leased', gone)
for s, items in pairs(into) do bulk('ZADD', P .. ':s:' .. s, items) end
return out
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
