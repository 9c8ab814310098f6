--[[
  A member leaves a room; if they owned it, the remaining member with the smallest id takes over.
  KEYS[1] room hash            room:{id}
  KEYS[2] member sorted set    room:{id}:members
  ARGV[1] userId
  A departure bumps the room's membersVersion (see removeMember-2.lua).
  Returns { status, removed, newOwnerId }
    status 0 OK, 1 ROOM_NOT_FOUND
    removed 1 when the user was a member, else 0
    newOwnerId '' unless ownership moved
]]
local owner = redis.call('HGET', KEYS[1], 'ownerId')
if not owner then return { 1, 0, '' } end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return { 0, 0, '' } end
redis.call('HINCRBY', KEYS[1], 'membersVersion', 1)
if owner ~= ARGV[1] then return { 0, 1, '' } end
local next = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if not next then return { 0, 1, '' } end
redis.call('HSET', KEYS[1], 'ownerId', next)
return { 0, 1, next }
