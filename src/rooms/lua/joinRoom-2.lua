--[[
  Adds a user to a public room.
  KEYS[1] room hash            room:{id}
  KEYS[2] member sorted set    room:{id}:members
  ARGV[1] userId
  Returns { status, added }
    status 0 OK, 1 ROOM_NOT_FOUND, 3 NOT_PUBLIC
    added  1 when the user was not a member before, else 0
]]
local visibility = redis.call('HGET', KEYS[1], 'visibility')
if not visibility then return { 1, 0 } end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return { 0, 0 } end
if visibility ~= 'PUBLIC' then return { 3, 0 } end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return { 0, 1 }
