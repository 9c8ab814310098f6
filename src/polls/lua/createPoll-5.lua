--[[
  A member creates a poll in a room.
  KEYS[1] room hash            room:{id}
  KEYS[2] member sorted set    room:{id}:members
  KEYS[3] poll hash            room:{id}:poll:<localId>
  KEYS[4] room polls set       room:{id}:polls         (localIds, score 0, time-ordered)
  KEYS[5] closing sorted set   polls:closing           (pollId -> closesAt ms)
  ARGV[1] userId (the creator; must be a member)
  ARGV[2] pollId
  ARGV[3] localId
  ARGV[4] roomId
  ARGV[5] question
  ARGV[6] options, a JSON array of texts
  ARGV[7] number of options
  ARGV[8] 1 multiple choice, 0 single
  ARGV[9] 1 anonymous, 0 not
  ARGV[10] closesAt, ms ('' for none)
  ARGV[11] now, ms
  Returns { status, field, value, ... }: the new poll's hash (HGETALL) after the status
    status 0 OK, 1 ROOM_NOT_FOUND, 2 NOT_MEMBER
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return { 1 } end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return { 2 } end
redis.call('HSET', KEYS[3],
  'id', ARGV[2], 'roomId', ARGV[4], 'creatorId', ARGV[1], 'question', ARGV[5], 'options', ARGV[6],
  'optionCount', ARGV[7], 'multiple', ARGV[8], 'anonymous', ARGV[9], 'closed', '0',
  'closesAt', ARGV[10], 'closedAt', '', 'createdAt', ARGV[11], 'voters', 0, 'version', 1)
for i = 0, tonumber(ARGV[7]) - 1 do redis.call('HSET', KEYS[3], 'v:' .. i, 0) end
redis.call('ZADD', KEYS[4], 0, ARGV[3])
if ARGV[10] ~= '' then redis.call('ZADD', KEYS[5], ARGV[10], ARGV[2]) end
local result = { 0 }
for _, v in ipairs(redis.call('HGETALL', KEYS[3])) do result[#result + 1] = v end
return result
