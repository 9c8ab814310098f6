--[[
  Stores a cache entry and releases its load lock if this caller still holds it.
  KEYS[1] entry key   cache:e:<digest>
  KEYS[2] lock key    cache:e:<digest>:lock
  ARGV[1] entry: 13-digit freshUntil (ms), a codec byte, the payload; '' stores nothing (the value
          was too large to cache): the lock is only released
  ARGV[2] entry time-to-live, ms (fresh time plus the time it may be served stale)
  ARGV[3] lock token
  Returns 1 when this call released the lock, 0 when it had expired or another caller holds it
]]
if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
