--[[
  The owner removes a member.
  KEYS[1] room hash            room:{id}
  KEYS[2] member sorted set    room:{id}:members
  ARGV[1] viewerId (must be the owner)
  ARGV[2] userId to remove (not the owner)
  A removal bumps the room's membersVersion: the periodic position check re-reads the memberships
  of a room's open streams only when it moved (a lost MemberLeft still ends them).
  Returns { status, removed }
    status 0 OK, 1 ROOM_NOT_FOUND, 6 NOT_OWNER, 8 IS_OWNER (the owner cannot remove themselves)
    removed 1 when the user was a member, else 0
]]
local owner = redis.call('HGET', KEYS[1], 'ownerId')
if not owner then return { 1, 0 } end
if owner ~= ARGV[1] or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return { 6, 0 } end
if ARGV[2] == owner then return { 8, 0 } end
local removed = redis.call('ZREM', KEYS[2], ARGV[2])
if removed == 1 then redis.call('HINCRBY', KEYS[1], 'membersVersion', 1) end
return { 0, removed }
