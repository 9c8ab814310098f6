--[[
  Registers a connection; decides atomically whether the user just came online.
  KEYS[1] user connection set      user:{id}:conns
  KEYS[2] user presence hash       user:{id}:presence  (state, away, lastSeenAt)
  KEYS[3] instance connections     presence:instance:{iid}:conns
  KEYS[4] grace sorted set         presence:grace
  ARGV[1] connectionId
  ARGV[2] userId
  Returns { transition, away, connections }
    transition 1 when the user went from OFFLINE to ONLINE (announce it), 0 otherwise (already
    online, or back within the grace period: nothing to announce)
]]
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
local count = redis.call('SCARD', KEYS[1])
if redis.call('HGET', KEYS[2], 'state') == 'ONLINE' then
  return { 0, redis.call('HGET', KEYS[2], 'away') == '1' and 1 or 0, count }
end
redis.call('HSET', KEYS[2], 'state', 'ONLINE', 'away', '')
return { 1, 0, count }
