"""Lua scripts run atomically inside Redis: one round trip for check-and-reserve, one for settle.

Every counter is a hash ``{u: usage, a: window anchor (ms), g: generation, e: epoch, w: record
watermark}``. Usage is an integer (nano-dollars, tokens or requests). ``KEYS[1]`` is the epoch
key: a counter built under an older epoch is treated as missing and rebuilt from the database
(see ``redis_backend``). Leases (``governance.metering.counters.leases``) are
written by the admit script and removed by the settle script, in the same round trips.

Numbers are formatted with ``%.0f`` before they go back to Redis: Lua 5.1 would otherwise print
them with 14 significant digits and lose precision.

Window rule (the same as ``governance.durations.window_start``): a calendar counter gets its
window start and end from the caller; any other counter's window is
``a + floor((now - a) / len) * len``. When the stored anchor is before the window start, usage
restarts at zero.
"""

from __future__ import annotations

_COMMON = """
local function fmt(x) return string.format('%.0f', x) end
local function window(a, now, len, cs, ce)
  if cs > 0 then return cs, ce end
  local start = a
  if now >= a + len then start = a + math.floor((now - a) / len) * len end
  return start, start + len
end
local epoch = redis.call('GET', KEYS[1]) or '0'
local now = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
"""

# KEYS: epoch, the owner's lease hash, the owners' sorted set, the configuration generation
# (``governance.metering.freshness``, read here so that checking it costs no round trip of its own), then
# one key per counter.
# ARGV: now_ms, keep_ms, request id ('' = no lease), lease payload, owner registration expiry ms
# (wall clock), lease slot (for the local port), then per counter: kind ('b' budget, 'r'
# requests, 't' tokens), limit, reserve, window length ms, calendar start ms (0 = not calendar),
# calendar end ms.
# Reply: {'missing', {i...}, cfg} | {'reject', {{i, usage, reset_ms}...}, cfg}
# | {'ok', {{gen, anchor, usage}...}, cfg}, cfg being the configuration generation (nil if unset).
# On 'ok' the lease ``payload .. "\n" .. "gen,anchor;..."`` is filed under the request id in the
# owner's hash, and the owner is registered (``NX``: its lease thread keeps the score current).
ADMIT = (
    _COMMON
    + """
local n = #KEYS - 4
local cfg = redis.call('GET', KEYS[4]) or false
local state = {}
local missing = {}
for i = 1, n do
  local h = redis.call('HMGET', KEYS[i + 4], 'u', 'a', 'g', 'e')
  if (not h[1]) or h[4] ~= epoch then
    missing[#missing + 1] = i
  else
    state[i] = h
  end
end
if #missing > 0 then return {'missing', missing, cfg} end
local plan = {}
local rejected = {}
for i = 1, n do
  local b = 6 + (i - 1) * 6
  local kind = ARGV[b + 1]
  local limit = tonumber(ARGV[b + 2])
  local reserve = tonumber(ARGV[b + 3])
  local u = tonumber(state[i][1])
  local a = tonumber(state[i][2])
  local start, reset = window(a, now, tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]))
  if a < start then u = 0; a = start end
  local bad = u >= limit
  if kind ~= 't' and u + reserve > limit then bad = true end
  if bad then rejected[#rejected + 1] = {i, fmt(u), fmt(reset)} end
  plan[i] = {u + reserve, a, reset}
end
if #rejected > 0 then return {'reject', rejected, cfg} end
local out = {}
local marks = {}
for i = 1, n do
  local key = KEYS[i + 4]
  redis.call('HSET', key, 'u', fmt(plan[i][1]), 'a', fmt(plan[i][2]))
  redis.call('PEXPIRE', key, math.max(plan[i][3] - now, 0) + keep)
  out[i] = {state[i][3], fmt(plan[i][2]), fmt(plan[i][1])}
  marks[i] = state[i][3] .. ',' .. fmt(plan[i][2])
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4] .. '\\n' .. table.concat(marks, ';'))
  redis.call('ZADD', KEYS[3], 'NX', ARGV[5], KEYS[2])
end
return {'ok', out, cfg}
"""
)

# KEYS: epoch, the owner's lease hash, the request's tombstone, then one key per counter.
# ARGV: now_ms, keep_ms, UsageRecord id (0 = none), request id ('' = no lease), mode, lease slot
# (for the local port), then per counter: generation, anchor at admission, reserved, actual,
# window length ms, calendar start ms, calendar end ms.
# Mode: 'hot' settles a Redis admission, 'db' a database admission (made while Redis was
# unreachable), 'reap' is the lease reaper settling a dead owner's Redis admission.
# The lease: every mode removes it (a 'db' admission may have left one behind when its Redis
# admit timed out after Redis ran it). 'reap' acts only if it removed it, and leaves a tombstone;
# 'hot' does nothing when the lease is gone and a tombstone says the reaper settled the request.
# Per counter:
# - missing or from an older epoch: skipped; it will be rebuilt from the database, which the
#   ledger has already brought up to date;
# - rebuilt since admission (other generation; always for 'db': a rebuild leaves database
#   reservations out, see ``redis_backend._rebuild``): the actual amount is added only if the
#   rebuild's database snapshot predates this request's UsageRecord (watermark ``w`` = highest
#   record id the snapshot saw);
# - same generation and window: the reservation is replaced by the actual amount;
# - same generation, window moved on: the reservation went with the old window; add the actual.
SETTLE = (
    _COMMON
    + """
local n = #KEYS - 3
local record = tonumber(ARGV[3])
local mode = ARGV[5]
if ARGV[4] ~= '' then
  local owned = redis.call('HDEL', KEYS[2], ARGV[4])
  if mode == 'reap' then
    if owned == 0 then return 0 end
    redis.call('SET', KEYS[3], '1', 'PX', keep)
  elseif mode == 'hot' and owned == 0 and redis.call('EXISTS', KEYS[3]) == 1 then
    return 0
  end
end
for i = 1, n do
  local key = KEYS[i + 3]
  local b = 6 + (i - 1) * 7
  local h = redis.call('HMGET', key, 'u', 'a', 'g', 'e', 'w')
  local rebuilt = h[1] and (mode == 'db' or h[3] ~= ARGV[b + 1])
  local seen = rebuilt and (record == 0 or record <= tonumber(h[5] or '0'))
  if h[1] and h[4] == epoch and not seen then
    local u = tonumber(h[1])
    local a = tonumber(h[2])
    local start, reset = window(a, now, tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7]))
    local same = (not rebuilt) and (a == tonumber(ARGV[b + 2])) and (a >= start)
    if a < start then u = 0; a = start end
    if same then u = u - tonumber(ARGV[b + 3]) end
    u = math.max(u + tonumber(ARGV[b + 4]), 0)
    redis.call('HSET', key, 'u', fmt(u), 'a', fmt(a))
    redis.call('PEXPIRE', key, math.max(reset - now, 0) + keep)
  end
end
return 1
"""
)

# ARGV: now_ms (unused), keep_ms, then per counter: usage, anchor, generation, ttl ms, watermark.
# Builds counters from database values unless another process already built them this epoch.
INIT = (
    _COMMON
    + """
local n = #KEYS - 1
for i = 1, n do
  local key = KEYS[i + 1]
  local b = 2 + (i - 1) * 5
  if redis.call('HGET', key, 'e') ~= epoch then
    redis.call('DEL', key)
    redis.call('HSET', key, 'u', ARGV[b + 1], 'a', ARGV[b + 2], 'g', ARGV[b + 3], 'e', epoch, 'w', ARGV[b + 5])
    redis.call('PEXPIRE', key, tonumber(ARGV[b + 4]) + keep)
  end
end
return 1
"""
)

# KEYS: the owners' sorted set, a dead owner's lease hash. Drops the owner's registration once it
# holds no lease (a lease filed meanwhile keeps it).
DROP_OWNER = """
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('ZREM', KEYS[1], KEYS[2]) end
return 1
"""
