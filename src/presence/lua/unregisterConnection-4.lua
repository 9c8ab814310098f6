--[[
  Removes a connection. The user's last connection starts a grace period (or, with grace 0, takes
  them OFFLINE at once); settleOffline ends it.
  KEYS[1] user connection set      user:{id}:conns
  KEYS[2] user presence hash       user:{id}:presence
  KEYS[3] instance connections     presence:instance:{iid}:conns
  KEYS[4] grace sorted set         presence:grace
  ARGV[1] connectionId
  ARGV[2] userId
  ARGV[3] now, ms
  ARGV[4] grace, ms
  Returns { transition, connections }
    transition 1 when the user went OFFLINE now (grace 0), 0 otherwise
]]
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return { 0, redis.call('SCARD', KEYS[1]) } end
local count = redis.call('SCARD', KEYS[1])
if count > 0 or redis.call('HGET', KEYS[2], 'state') ~= 'ONLINE' then return { 0, count } end
redis.call('HSET', KEYS[2], 'lastSeenAt', ARGV[3])
if tonumber(ARGV[4]) <= 0 then
  redis.call('HSET', KEYS[2], 'state', 'OFFLINE', 'away', '')
  return { 1, 0 }
end
redis.call('ZADD', KEYS[4], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[2])
return { 0, 0 }
