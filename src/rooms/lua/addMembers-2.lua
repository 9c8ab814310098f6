--[[
  A member adds users to a room.
  KEYS[1] room hash            room:{id}
  KEYS[2] member sorted set    room:{id}:members
  ARGV[1] viewerId (must be a member)
  ARGV[2..n] userIds to add
  Returns { status, addedId... }
    status 0 OK, 1 ROOM_NOT_FOUND, 2 NOT_MEMBER; the ids that were not members before follow
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return { 1 } end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return { 2 } end
local result = { 0 }
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[i]) == 1 then
    result[#result + 1] = ARGV[i]
  end
end
return result
