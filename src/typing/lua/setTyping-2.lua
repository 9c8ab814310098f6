--[[
  Starts (or refreshes) or stops a user's typing in a room, or (ARGV[3] '') only drops expired
  entries. Expired entries are always dropped first; exactly one caller sees a given expiry as a
  change, however many instances sweep.
  KEYS[1] room typing sorted set   room:{id}:typing   (userId -> expiry ms)
  KEYS[2] typing rooms sorted set  typing:rooms        (roomId -> earliest expiry ms)
  ARGV[1] roomId
  ARGV[2] userId
  ARGV[3] 1 typing, 0 stopped, '' expiry sweep only (ARGV[2] unused)
  ARGV[4] now, ms
  ARGV[5] timeout, ms
  Returns { changed, userId... }: changed 1 when the list of users typing changed (then the list
  follows); a refresh of someone already typing changes nothing
]]
-- Nobody typing in the room (the common case of a stop, which every send makes): nothing to drop.
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return { 0 }
end
local now = tonumber(ARGV[4])
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local changed = removed > 0
if ARGV[3] == '1' then
  if redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[2]) == 1 then changed = true end
elseif ARGV[3] == '0' then
  if redis.call('ZREM', KEYS[1], ARGV[2]) == 1 then changed = true end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  redis.call('ZADD', KEYS[2], first[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if not changed then return { 0 } end
local result = { 1 }
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do result[#result + 1] = id end
return result
