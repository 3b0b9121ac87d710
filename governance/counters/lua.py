"""Lua scripts run atomically inside Redis: one round trip for check-and-reserve, one for settle.

Every counter is a hash ``{u: usage, a: window anchor (ms), g: generation, e: epoch}``. Usage is an
integer (nano-dollars, tokens or requests). ``KEYS[1]`` is the epoch key: a counter built under an
older epoch is treated as missing and rebuilt from the database (see ``redis_backend``).

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

# ARGV: now_ms, keep_ms, then per counter: kind ('b' budget, 'r' requests, 't' tokens), limit,
# reserve, window length ms, calendar start ms (0 = not calendar), calendar end ms.
# Reply: {'missing', {i...}} | {'reject', {{i, usage, reset_ms}...}} | {'ok', {{gen, anchor, usage}...}}
ADMIT = (
    _COMMON
    + """
local n = #KEYS - 1
local state = {}
local missing = {}
for i = 1, n do
  local h = redis.call('HMGET', KEYS[i + 1], 'u', 'a', 'g', 'e')
  if (not h[1]) or h[4] ~= epoch then
    missing[#missing + 1] = i
  else
    state[i] = h
  end
end
if #missing > 0 then return {'missing', missing} end
local plan = {}
local rejected = {}
for i = 1, n do
  local b = 2 + (i - 1) * 6
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
if #rejected > 0 then return {'reject', rejected} end
local out = {}
for i = 1, n do
  local key = KEYS[i + 1]
  redis.call('HSET', key, 'u', fmt(plan[i][1]), 'a', fmt(plan[i][2]))
  redis.call('PEXPIRE', key, math.max(plan[i][3] - now, 0) + keep)
  out[i] = {state[i][3], fmt(plan[i][2]), fmt(plan[i][1])}
end
return {'ok', out}
"""
)

# ARGV: now_ms, keep_ms, UsageRecord id (0 = none), then per counter: generation, anchor at
# admission, reserved, actual, window length ms, calendar start ms, calendar end ms.
# - missing or from an older epoch: skipped; it will be rebuilt from the database, which the
#   ledger has already brought up to date;
# - same generation and window: the reservation is replaced by the actual amount;
# - rebuilt since admission (other generation): the reservation is not in it; the actual amount
#   is added only if the rebuild's database snapshot predates this request's UsageRecord
#   (watermark ``w`` = highest record id the snapshot saw; see ``redis_backend._rebuild``);
# - same generation, window moved on: the reservation went with the old window; add the actual.
SETTLE = (
    _COMMON
    + """
local n = #KEYS - 1
local record = tonumber(ARGV[3])
for i = 1, n do
  local key = KEYS[i + 1]
  local h = redis.call('HMGET', key, 'u', 'a', 'g', 'e', 'w')
  local rebuilt = h[1] and h[3] ~= ARGV[4 + (i - 1) * 7]
  local seen = rebuilt and (record == 0 or record <= tonumber(h[5] or '0'))
  if h[1] and h[4] == epoch and not seen then
    local b = 3 + (i - 1) * 7
    local u = tonumber(h[1])
    local a = tonumber(h[2])
    local start, reset = window(a, now, tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7]))
    local same = (h[3] == ARGV[b + 1]) and (a == tonumber(ARGV[b + 2])) and (a >= start)
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
