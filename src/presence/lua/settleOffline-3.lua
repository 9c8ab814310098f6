--[[
  Ends a user's grace period: OFFLINE if they have no connection now. Exactly one caller sees the
  transition, however many instances run it.
  KEYS[1] user connection set      user:{id}:conns
  KEYS[2] user presence hash       user:{id}:presence
  KEYS[3] grace sorted set         presence:grace
  ARGV[1] userId
  ARGV[2] now, ms
  Returns { transition, lastSeenAt }
    transition 1 when the user went OFFLINE now, 0 otherwise (not due, reconnected, or settled)
]]
local due = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return { 0, '' } end
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('SCARD', KEYS[1]) > 0 or redis.call('HGET', KEYS[2], 'state') ~= 'ONLINE' then
  return { 0, '' }
end
redis.call('HSET', KEYS[2], 'state', 'OFFLINE', 'away', '')
return { 1, redis.call('HGET', KEYS[2], 'lastSeenAt') or '' }
