--[[
  Drops expired typing entries of a room. Exactly one caller sees a given expiry as a change.
  KEYS[1] room typing sorted set   room:{id}:typing
  KEYS[2] typing rooms sorted set  typing:rooms
  ARGV[1] roomId
  ARGV[2] now, ms
  Returns { changed, userId... } as setTyping
]]
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]))
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  redis.call('ZADD', KEYS[2], first[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if removed == 0 then return { 0 } end
local result = { 1 }
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do result[#result + 1] = id end
return result
