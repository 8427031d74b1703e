"""The limiter's Lua scripts: each acquisition, correction or hint is one round trip to Redis.

Times are Redis's own clock in milliseconds (TIME), so workers on hosts whose clocks differ still
share one line. Each bucket is GCRA's theoretical arrival time (TAT) without burst tolerance: the
moment the next request may go. A reservation takes the latest of now, the provider's "blocked
until" and each bucket's TAT, and moves each TAT one emission interval (a request, or its tokens)
past it, so every caller is told its own moment in the order it asked: first come, first served.
"""

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: requests TAT, tokens TAT, blocked until. ARGV: ms per request (0: no limit), ms per token
# (0: no limit), the request's tokens. Returns {wait ms, 1 if a bucket set the moment, 2 if the provider}.
RESERVE = _NOW + """
local per_request, per_token, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local at, why = now, 0
local blocked = tonumber(redis.call('get', KEYS[3]) or '0')
if blocked > at then at, why = blocked, 2 end
if per_request > 0 then
  local tat = tonumber(redis.call('get', KEYS[1]) or '0')
  if tat > at then at, why = tat, 1 end
end
if per_token > 0 then
  local tat = tonumber(redis.call('get', KEYS[2]) or '0')
  if tat > at then at, why = tat, 1 end
end
if per_request > 0 then
  local tat = at + per_request
  redis.call('set', KEYS[1], tat, 'PX', math.ceil(tat - now) + 1000)
end
if per_token > 0 then
  local tat = at + tokens * per_token
  redis.call('set', KEYS[2], tat, 'PX', math.ceil(tat - now) + 1000)
end
return {at - now, why}
"""

# After a call. KEYS: tokens TAT, blocked until, leases. ARGV: tokens used minus tokens reserved, ms
# per token (0: no limit), ms the provider asked to hold every call (0: none), the call's lease ('': none).
SETTLE = _NOW + """
local delta, per_token, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] ~= '' then redis.call('zrem', KEYS[3], ARGV[4]) end
if per_token > 0 and delta ~= 0 then
  local tat = tonumber(redis.call('get', KEYS[1]) or '0')
  if tat > 0 then
    tat = tat + delta * per_token
    if tat > now then
      redis.call('set', KEYS[1], tat, 'PX', math.ceil(tat - now) + 1000)
    else
      redis.call('del', KEYS[1])
    end
  end
end
if hold > 0 then
  local until_ms = now + hold
  if until_ms > tonumber(redis.call('get', KEYS[2]) or '0') then
    redis.call('set', KEYS[2], until_ms, 'PX', hold + 1000)
  end
end
return 1
"""

# Just before a call. KEYS: blocked until, leases, next send. ARGV: check the block (1/0), max
# concurrency (0: none), lease ms, lease id, ms between sends (0: no requests-per-minute limit).
# Returns {ADMITTED, 0}, {PROVIDER_HOLD, ms}, {SPACING, ms} or {CONCURRENCY_FULL, 0}; admitted, it
# holds a lease if there is a concurrency limit. Sends are spaced apart as well as reserved ahead:
# calls whose moments came while their workers were busy would otherwise leave together.
ADMITTED, PROVIDER_HOLD, SPACING, CONCURRENCY_FULL = 0, 1, 2, 3
ADMIT = _NOW + """
if ARGV[1] == '1' then
  local blocked = tonumber(redis.call('get', KEYS[1]) or '0')
  if blocked > now then return {1, blocked - now} end
end
local cap = tonumber(ARGV[2])
if cap > 0 then
  redis.call('zremrangebyscore', KEYS[2], '-inf', now)
  if redis.call('zcard', KEYS[2]) >= cap then return {3, 0} end
end
local spacing = tonumber(ARGV[5])
if spacing > 0 then
  local next_send = tonumber(redis.call('get', KEYS[3]) or '0')
  -- The clock counts whole milliseconds: a send less than one early goes.
  if next_send - now >= 1 then return {2, next_send - now} end
  redis.call('set', KEYS[3], now + spacing, 'PX', math.ceil(spacing) + 1000)
end
if cap > 0 then
  redis.call('zadd', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
  redis.call('pexpire', KEYS[2], ARGV[3])
end
return {0, 0}
"""
