--[[
  Counts a user's subscriptions holding a room, across instances; a user is present while the
  count is above 0. The instance's own tally lets a live instance clean up after a dead one.
  KEYS[1] room presence hash       room:{id}:present
  KEYS[2] instance rooms hash      presence:instance:{iid}:rooms
  ARGV[1] userId
  ARGV[2] `<roomId>\n<userId>` (field of KEYS[2])
  ARGV[3] delta (+1 on subscribe, -n on unsubscribe or cleanup)
  Returns transition: 1 became present, -1 stopped being present, 0 no change
]]
local delta = tonumber(ARGV[3])
local mine = redis.call('HINCRBY', KEYS[2], ARGV[2], delta)
if mine <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], delta)
if count <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if count - delta > 0 then return -1 end
  return 0
end
if count - delta <= 0 then return 1 end
return 0
