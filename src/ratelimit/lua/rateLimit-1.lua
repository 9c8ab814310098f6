--[[
  One sliding-window-log check: trim, count, add, expire, in one call.
  KEYS[1] sorted set of admitted hits   rl:{identity}:scope   (member -> time ms)
  ARGV[1] now, ms
  ARGV[2] window, ms
  ARGV[3] max hits in any window
  ARGV[4] hits this request asks for (aliases count each)
  ARGV[5] unique member prefix for this request
  Returns { admitted, remaining, retryAfterMs, resetMs }
    admitted 1 when all hits fit (they are recorded), 0 when none is recorded
    retryAfterMs: when refused, until enough of the oldest hits leave the window
    resetMs: until the window is empty of the hits counted now
]]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local hits = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used + hits > max then
  local retry = window
  if hits <= max then
    -- The (used + hits - max)-th oldest hit must leave the window first.
    local need = redis.call('ZRANGE', KEYS[1], used + hits - max - 1, used + hits - max - 1, 'WITHSCORES')
    if need[2] then retry = tonumber(need[2]) + window - now end
  end
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local reset = window
  if oldest[2] then reset = tonumber(oldest[2]) + window - now end
  return { 0, math.max(max - used, 0), retry, reset }
end
for i = 1, hits do
  redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':' .. i)
end
redis.call('PEXPIRE', KEYS[1], window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return { 1, max - used - hits, 0, tonumber(oldest[2]) + window - now }
