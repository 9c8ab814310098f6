--[[
  Closes a poll: by hand (its creator or the room owner, while a member), or on schedule once its
  closesAt has passed. Exactly one call closes a poll, however many instances sweep at once.
  KEYS[1] poll hash            room:{id}:poll:<localId>
  KEYS[2] room hash            room:{id}                  (ownerId)
  KEYS[3] member sorted set    room:{id}:members
  KEYS[4] closing sorted set   polls:closing              (pollId -> closesAt ms)
  ARGV[1] userId closing by hand, or '' for the scheduled close
  ARGV[2] pollId (its member in the closing set)
  ARGV[3] now, ms
  Returns { status, changed, field, value, ... }: the poll's hash (HGETALL) follows
    changed 1 for the call that closed the poll (0: already closed, or a scheduled close not due)
    status 0 OK, 2 NOT_MEMBER, 9 POLL_NOT_FOUND, 13 NOT_CLOSER (neither its creator nor the owner)
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[2])
  return { 9, 0 }
end
local poll = redis.call('HMGET', KEYS[1], 'closed', 'closesAt', 'creatorId')
if ARGV[1] ~= '' then
  if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then return { 2, 0 } end
  if poll[3] ~= ARGV[1] and redis.call('HGET', KEYS[2], 'ownerId') ~= ARGV[1] then return { 13, 0 } end
end
local now = tonumber(ARGV[3])
local due = poll[2] ~= '' and tonumber(poll[2]) <= now
local changed = 0
if poll[1] ~= '1' and (ARGV[1] ~= '' or due) then
  changed = 1
  -- Votes stopped at closesAt if it came first (the sweep runs a little after it).
  redis.call('HSET', KEYS[1], 'closed', '1', 'closedAt', due and poll[2] or ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
if poll[1] == '1' or changed == 1 then redis.call('ZREM', KEYS[4], ARGV[2]) end
local result = { 0, changed }
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do result[#result + 1] = v end
return result
