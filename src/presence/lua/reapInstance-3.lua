--[[
  Claims a dead instance's connections and room subscriptions so that exactly one live instance
  cleans them up (and announces what changes).
  KEYS[1] instances sorted set     presence:instances
  KEYS[2] instance connections     presence:instance:{iid}:conns
  KEYS[3] instance rooms           presence:instance:{iid}:rooms
  ARGV[1] instanceId
  ARGV[2] deadline, ms: only an instance whose last heartbeat is at or before it is reaped
  Returns { claimed, connectionCount, connectionId, userId, ..., roomUserKey, count, ... }
    claimed 0 when the instance is alive again or another caller reaped it
]]
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not beat or tonumber(beat) > tonumber(ARGV[2]) then return { 0 } end
redis.call('ZREM', KEYS[1], ARGV[1])
local conns = redis.call('HGETALL', KEYS[2])
local rooms = redis.call('HGETALL', KEYS[3])
redis.call('DEL', KEYS[2], KEYS[3])
local result = { 1, #conns / 2 }
for i = 1, #conns do result[#result + 1] = conns[i] end
for i = 1, #rooms do result[#result + 1] = rooms[i] end
return result
