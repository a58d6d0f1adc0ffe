"""The Lua scripts of the Redis Streams backend (each runs atomically in Redis).

Layout 3 (``P:v`` = ``3``), keys under the prefix ``P`` (default ``{netsuke}:q``: one hash
tag, so one cluster slot). Layout 3 is layout 2 with one more reading of line 11 (below): a
queued task's entry is ``''`` until its first take (the client writes a new task's strings
with ``MSET`` before the script's ``XADD`` gives the entry its id), so a layout-2 queue is a
valid layout-3 queue and converts by setting ``P:v``; a layout-2 reader would drop such
entries as stale, hence the new number.

* ``P:t:<id>``: the task's changing state, **one string** (one key, one allocation, one
  ``SET`` per change: a 17-field hash cost Redis about four times as much). Lines separated by
  ``\\n``: 1. ``status`` (JSON), 2. ``attempts``, 3. ``run_at`` (JSON), 4. ``lease_owner``
  (JSON), 5. ``lease_expires_at`` (JSON), 6. ``result`` (JSON), 7. ``last_error`` (JSON),
  8. ``updated_at`` (JSON), 9. ``finished_at`` (JSON), 10. lease expiry (ms, ``0``: none),
  11. its ready stream entry (``''``: none; on a queued task also "its first entry, not yet
  read": the take accepts for it any entry of its own stream), 12. created (ms), 13. the
  lease holder (the consumer as JSON, ``''``: none), 14. the length in bytes of its stream's
  key; then that key. JSON text has no raw newline, so the lines split safely; the stream key
  (it holds the kind) is read by its length.
* ``P:f:<id>``: the fields that never change (``id``, ``kind``, ``payload``, ...) as one JSON
  object, written once at submit: a lease and a settle rewrite only the ~200 bytes of
  ``P:t:<id>``, not the payload. A task as JSON is ``{`` + the nine columns + this object's
  members: the scripts and the client splice it, nothing parses it in Lua.
* ``P:s:queued``, ``P:s:succeeded``, ``P:s:dead``: the status indexes (sorted sets by created
  ms; ties by id, which is UUIDv7: creation order). Leased tasks are the members of
  ``P:leases`` (by lease expiry): no ``P:s:leased``, and no index of all tasks (a listing of
  every status merges the four).
* ``P:delayed`` (by ``run_at``), ``P:i:<key>`` (idempotency), ``P:routes`` (the ready streams'
  members ``<priority>|<kind>|<capabilities>``), ``P:r:<member>`` the ready streams (consumer
  group ``netsuke``; an entry's one field ``id`` names its task), ``P:dead`` the dead-letter
  stream, ``P:v`` the layout version.

Arguments are flat (``ARGV``, packed by hiredis in C): no JSON to decode in Lua.
"""

from __future__ import annotations

__all__ = ["EXTEND", "LAYOUT", "MIGRATE", "PURGE", "REQUEUE", "SETTLE", "SUBMIT", "TAKE"]

GROUP = "netsuke"
LAYOUT = 3

_COMMON = """
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
-- MGET of many keys (in slices); the values in order (false: missing)
local function mget(keys)
  local out = {}
  for i = 1, #keys, 1000 do
    local got = redis.call('MGET', unpack(keys, i, math.min(i + 999, #keys)))
    for j = 1, #got do out[#out + 1] = got[j] end
  end
  return out
end
-- MSET of many keys; items flat (key, value, ...): one command, not a SET per task (each
-- redis.call costs Redis its own argument objects, lookup and propagation)
local function mset(items)
  for i = 1, #items, 1000 do
    redis.call('MSET', unpack(items, i, math.min(i + 999, #items)))
  end
end
local find, sub = string.find, string.sub
-- n lines of text from at: the lines (a table) and the position after them (plain find:
-- memchr, some 1.6 times faster in Redis than a pattern of n captures)
local function lines(text, at, n)
  local v = {}
  for i = 1, n do
    local e = find(text, '\\n', at, true)
    v[i] = sub(text, at, e - 1)
    at = e + 1
  end
  return v, at
end
-- a task's string as its 14 fields (see the module documentation), or nil
local function parse(rec)
  if not rec then return nil end
  local v, at = lines(rec, 1, 14)
  v[14] = sub(rec, at, at + tonumber(v[14]) - 1)  -- the stream's key
  return v
end
local function dump(v)  -- (one new string: each costs Redis its length)
  local key = v[14]
  v[14], v[15] = #key, key
  local rec = table.concat(v, '\\n', 1, 15)
  v[14], v[15] = key, nil
  return rec
end
-- the task as one JSON document (f: its fixed fields' JSON object, P:f:<id>)
local function doc(v, f)
  return '{"status":' .. v[1] .. ',"attempts":' .. v[2] .. ',"run_at":' .. v[3] ..
    ',"lease_owner":' .. v[4] .. ',"lease_expires_at":' .. v[5] .. ',"result":' .. v[6] ..
    ',"last_error":' .. v[7] .. ',"updated_at":' .. v[8] .. ',"finished_at":' .. v[9] .. ',' ..
    sub(f, 2)
end
"""

SUBMIT = (
    _COMMON
    + """
-- Runs in a MULTI after the MSET of the new tasks' two strings (P:t:<id> and P:f:<id>, built
-- by the client: the bulk of a task never enters Lua). ARGV[1]: the prefix; then per task
-- five arguments: id, created (ms), run_at (ms), its idempotency key ('': none) and its
-- stream's member of P:routes. Per task: the idempotency key (a duplicate gets the first
-- task's id, and its two strings, written by the MSET, are deleted) and an XADD
-- to its ready stream when due (its entry stays '' in its string: a queued task's first
-- entry), else a ZADD to P:delayed; the status index gets one ZADD for all. Returns per task
-- 1 (created) or the first task's id (a duplicate).
local P = ARGV[1]
local out, made, routes = {}, {}, {}
for i = 2, #ARGV, 5 do
  local id, created, run, idem, member = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4]
  local got = false
  if idem ~= '' then
    got = redis.call('GET', P .. ':i:' .. idem)
    if not got then redis.call('SET', P .. ':i:' .. idem, id) end
  end
  if got then
    redis.call('DEL', P .. ':t:' .. id, P .. ':f:' .. id)
    out[#out + 1] = got
  else
    local stream = routes[member]
    if not stream then
      stream = P .. ':r:' .. member
      routes[member] = stream
      if redis.call('SADD', P .. ':routes', member) == 1 then
        pcall(redis.call, 'XGROUP', 'CREATE', stream, 'netsuke', '0', 'MKSTREAM')
      end
    end
    if run == created or tonumber(run) <= tonumber(created) then
      redis.call('XADD', stream, '*', 'id', id)
    else
      redis.call('ZADD', P .. ':delayed', run, id)
    end
    made[#made + 1] = created
    made[#made + 1] = id
    out[#out + 1] = 1
  end
end
bulk('ZADD', P .. ':s:queued', made)
return out
"""
)

TAKE = (
    _COMMON
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
  local a = find(m, '|', 1, true)
  local b = a and find(m, '|', a + 1, true)
  if b then
    local prio, kind, route = tonumber(sub(m, 1, a - 1)), sub(m, a + 1, b - 1), sub(m, b + 1)
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
  local v = parse(redis.call('GET', k))
  if v and v[1] == '"queued"' then
    v[11] = redis.call('XADD', v[14], '*', 'id', id)
    redis.call('SET', k, dump(v))
  end
end
local served = {}
for _, st in ipairs(streams) do served[st] = true end
-- the leased tasks' strings are read (MGET), written (MSET) and their fixed fields read (MGET)
-- in one command each for all, like the index moves
local rows, queued, leases, writes, fixed, taken = {}, {}, {}, {}, {}, 0
local function leased(k, id, rec)  -- the task's new string rec: written, indexed, returned
  writes[#writes + 1] = k
  writes[#writes + 1] = rec
  leases[#leases + 1] = exp
  leases[#leases + 1] = id
  taken = taken + 1
  -- the pieces, not a document built here: each new Lua string costs Redis its length
  rows[#rows + 1] = rec
  rows[#rows + 1] = false  -- (its fixed fields, read below)
  fixed[taken] = P .. ':f:' .. id
end
local function lease(k, id, e, v)
  if v[1] == '"queued"' then queued[#queued + 1] = id end
  v[1] = '"leased"'
  v[2] = (tonumber(v[2]) or 0) + 1
  v[4] = owner_json
  v[5] = exp_json
  v[8] = now_json
  v[10] = exp
  v[11] = e
  v[13] = owner_json
  leased(k, id, dump(v))
end
-- a queued task's string rec, read from the stream st (tail: its lines from 14 on) at entry
-- e, as leased: the new string, or nil when the entry is stale. Lease() without the split:
-- the lines it keeps are copied in spans (8 new strings per task instead of 16 and a table)
local n = {}  -- (the newlines' positions, reused)
local function lease_queued(rec, e, tail)
  if not rec then return nil end
  local at = 0
  for i = 1, 13 do
    at = find(rec, '\\n', at + 1, true)
    n[i] = at
  end
  if sub(rec, 1, n[1] - 1) ~= '"queued"' then return nil end
  local entry = sub(rec, n[10] + 1, n[11] - 1)
  if entry ~= e and not (entry == '' and sub(rec, n[13] + 1) == tail) then return nil end
  return '"leased"\\n' .. ((tonumber(sub(rec, n[1] + 1, n[2] - 1)) or 0) + 1) .. '\\n' ..
    sub(rec, n[2] + 1, n[3]) .. owner_json .. '\\n' .. exp_json .. '\\n' ..
    sub(rec, n[5] + 1, n[7]) .. now_json .. '\\n' .. sub(rec, n[8] + 1, n[9]) .. exp .. '\\n' ..
    e .. '\\n' .. sub(rec, n[11] + 1, n[12]) .. owner_json .. '\\n' .. sub(rec, n[13] + 1)
end
if limit > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', now, 'LIMIT', 0, 1000)) do
    if taken >= limit then break end
    local k = P .. ':t:' .. id
    local v = parse(redis.call('GET', k))
    if v and served[v[14]] then
      -- the expired lease's pending entry moves to this consumer (its delivery count grows)
      redis.call('XCLAIM', v[14], 'netsuke', consumer, 0, v[11])
      lease(k, id, v[11], v)
    end
  end
end
for _, st in ipairs(streams) do
  if taken >= limit then break end
  local res = redis.call('XREADGROUP', 'GROUP', 'netsuke', consumer, 'COUNT', limit - taken,
    'STREAMS', st, '>')
  if res then
    local entries, keys = res[1][2], {}
    for i, entry in ipairs(entries) do keys[i] = P .. ':t:' .. entry[2][2] end
    local recs = mget(keys)
    local tail = #st .. '\\n' .. st
    for i, entry in ipairs(entries) do
      local e, id = entry[1], entry[2][2]
      local rec = lease_queued(recs[i], e, tail)
      if rec then
        queued[#queued + 1] = id
        leased(keys[i], id, rec)
      else  -- a stale entry (the task moved on): drop it
        redis.call('XACK', st, 'netsuke', e)
        redis.call('XDEL', st, e)
      end
    end
  end
end
mset(writes)
local fs = mget(fixed)
for i = 1, taken do rows[2 * i] = fs[i] end
bulk('ZREM', P .. ':s:queued', queued)
bulk('ZADD', P .. ':leases', leases)
return rows  -- per task its string and its fixed fields (the client splices them: one parse)
"""
)

SETTLE = (
    _COMMON
    + """
-- ARGV[1..4]: the prefix, the consumer (JSON), now (ms), now (JSON); ARGV[5]: the settles,
-- 10 lines each: id, new status (plain), run_at (ms, 0: none), then the JSON values of
-- attempts, run_at, lease_owner, lease_expires_at, result, last_error, finished_at ('':
-- unchanged). One call settles many (one fsync for all). Returns 1 (settled) or 0 (the
-- consumer does not hold the lease) per task. The tasks' strings are read (MGET) and written
-- (MSET) in one command each for all, like the stream entries and the index sets.
local P, holder, now, now_json, all = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local COLS = {2, 3, 4, 5, 6, 7, 9}  -- the lines the 7 values go to
local out, acks, gone, into, writes = {}, {}, {}, {}, {}
local items, keys = {}, {}
local at = 1
while at <= #all do
  local t
  t, at = lines(all, at, 10)
  items[#items + 1] = t
  keys[#keys + 1] = P .. ':t:' .. t[1]
end
local recs, cur = mget(keys), {}  -- cur: a task settled twice in one call sees its first
-- a task's string is not split into a table: its 13 newlines are found (n) and the lines
-- read or kept are cut from it, the new string made in one concat (fewer Lua strings)
local n, p = {}, {}
for i, t in ipairs(items) do
  local id, new, run = t[1], t[2], tonumber(t[3])
  local k = keys[i]
  local rec = cur[id] or recs[i]
  local ok = false
  if rec then
    local at = 0
    for j = 1, 13 do
      at = find(rec, '\\n', at + 1, true)
      n[j] = at
    end
    ok = sub(rec, 1, n[1] - 1) == '"leased"' and sub(rec, n[12] + 1, n[13] - 1) == holder and
      tonumber(sub(rec, n[9] + 1, n[10] - 1)) > now
  end
  if not ok then
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
    for j = 1, 7 do  -- the lines of the 7 values: the settle's, or kept
      local line, x = COLS[j], t[3 + j]
      if x == '' then x = sub(rec, n[line - 1] + 1, n[line] - 1) end
      p[line] = x
    end
    p[8] = now_json
    local e, tail = sub(rec, n[10] + 1, n[11] - 1), sub(rec, n[13] + 1)
    p[12] = sub(rec, n[11] + 1, n[12] - 1)
    p[14] = tail
    if new == 'leased' then
      p[1], p[10], p[11], p[13] = '"leased"', sub(rec, n[9] + 1, n[10] - 1), e, holder
    else
      local st = sub(tail, find(tail, '\\n', 1, true) + 1)
      p[1], p[10], p[11], p[13] = '"' .. new .. '"', '0', '', ''
      acks[st] = acks[st] or {}
      table.insert(acks[st], e)
      gone[#gone + 1] = id
      into[new] = into[new] or {}
      table.insert(into[new], p[12])
      table.insert(into[new], id)
      if new == 'queued' then
        if run <= now then
          p[11] = redis.call('XADD', st, '*', 'id', id)
        else
          redis.call('ZADD', P .. ':delayed', run, id)
        end
      elseif new == 'dead' then
        redis.call('XADD', P .. ':dead', '*', 'id', id)
      end
    end
    rec = table.concat(p, '\\n', 1, 14)
    cur[id] = rec
    writes[#writes + 1] = k
    writes[#writes + 1] = rec
  end
end
mset(writes)
-- acked entries go by trimming the stream below its oldest pending entry and below the
-- newest entry acked here (entries are delivered in order: all before it were delivered, and
-- those not pending are acked); cheaper than an XDEL of each
local function id_less(a, b)  -- entry ids 'ms-seq', compared as numbers
  local ia, ib = find(a, '-', 1, true), find(b, '-', 1, true)
  if ia ~= ib then return ia < ib end  -- (ms of fewer digits)
  if #a == #b then return a < b end  -- (digits at the same places: as text)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am < bm or (am == bm and tonumber(as) < tonumber(bs))
end
for st, es in pairs(acks) do
  bulk('XACK', st, es, 'netsuke')
  local top = es[1]
  for j = 2, #es do
    if id_less(top, es[j]) then top = es[j] end
  end
  -- (the extended form: the summary would count every consumer the group ever had)
  local oldest = redis.call('XPENDING', st, 'netsuke', '-', '+', 1)[1]
  if oldest and id_less(oldest[1], top) then top = oldest[1] end
  redis.call('XTRIM', st, 'MINID', top)
end
bulk('ZREM', P .. ':leases', gone)
for s, items in pairs(into) do bulk('ZADD', P .. ':s:' .. s, items) end
return out
"""
)

EXTEND = (
    _COMMON
    + """
local P, consumer, holder, now, exp, exp_json = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]),
  ARGV[5], ARGV[6]
local n = 0
for i = 7, #ARGV do
  local id = ARGV[i]
  local k = P .. ':t:' .. id
  local v = parse(redis.call('GET', k))
  if v and v[1] == '"leased"' and v[13] == holder and tonumber(v[10]) > now then
    v[5] = exp_json
    v[10] = exp
    redis.call('SET', k, dump(v))
    redis.call('ZADD', P .. ':leases', exp, id)
    redis.call('XCLAIM', v[14], 'netsuke', consumer, 0, v[11], 'JUSTID')  -- resets its idle time
    n = n + 1
  end
end
return n
"""
)

REQUEUE = (
    _COMMON
    + """
-- ARGV: the prefix, the id, then the JSON values of lines 2-9 ('': unchanged)
local P, id = ARGV[1], ARGV[2]
local k = P .. ':t:' .. id
local v = parse(redis.call('GET', k))
if not (v and v[1] == '"dead"') then return false end
for j = 2, 9 do
  if ARGV[j + 1] ~= '' then v[j] = ARGV[j + 1] end
end
v[1] = '"queued"'
v[10] = '0'
v[13] = ''
v[11] = redis.call('XADD', v[14], '*', 'id', id)
redis.call('SET', k, dump(v))
redis.call('ZREM', P .. ':s:dead', id)
redis.call('ZADD', P .. ':s:queued', v[12], id)
return doc(v, redis.call('GET', P .. ':f:' .. id))
"""
)

PURGE = (
    _COMMON
    + """
local P, status = ARGV[1], ARGV[2]
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local k = P .. ':t:' .. id
  local v = parse(redis.call('GET', k))
  if v and v[1] == '"' .. status .. '"' then
    local idem = cjson.decode(redis.call('GET', P .. ':f:' .. id))['idempotency_key']
    if type(idem) == 'string' then redis.call('DEL', P .. ':i:' .. idem) end
    redis.call('DEL', k, P .. ':f:' .. id)
    redis.call('ZREM', P .. ':s:' .. status, id)
    n = n + 1
  end
end
return n
"""
)

MIGRATE = (
    _COMMON
    + """
-- Layout 1 to 2, up to ARGV[2] tasks a call (prefix ARGV[1]): each task hash of P:all becomes
-- a string; when none is left, P:all and P:s:leased go and P:v is set to 2 (the client then
-- sets 3: layout 2 is valid layout 3). Returns the tasks converted (0: done).
local P, count = ARGV[1], tonumber(ARGV[2])
local ids = redis.call('ZRANGE', P .. ':all', 0, count - 1)
for _, id in ipairs(ids) do
  local k = P .. ':t:' .. id
  if redis.call('TYPE', k)['ok'] == 'hash' then
    local h = redis.call('HMGET', k, 'status', 'attempts', 'run_at', 'lease_owner',
      'lease_expires_at', 'result', 'last_error', 'updated_at', 'finished_at', '_x', '_e', '_c',
      '_o', '_st', 'j', '_s')
    local v = {}
    for j = 1, 9 do v[j] = h[j] or 'null' end
    v[10] = h[10] or '0'
    v[11] = h[11] or ''
    v[12] = h[12] or '0'
    v[13] = h[16] == 'leased' and v[4] or ''  -- (lease_owner: the consumer as JSON)
    v[14] = h[14] or ''
    if h[16] ~= 'leased' then v[10] = '0' end
    redis.call('DEL', k)
    redis.call('SET', k, dump(v))
    redis.call('SET', P .. ':f:' .. id, h[15])
  end
  redis.call('ZREM', P .. ':all', id)
end
if #ids == 0 then
  redis.call('DEL', P .. ':all', P .. ':s:leased')
  redis.call('SET', P .. ':v', '2')
end
return #ids
"""
)
