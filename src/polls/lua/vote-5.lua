--[[
  Replaces a member's vote in a poll: the previous choice is taken back and the new one counted in
  the same step, so option counts and the voter count always equal a recount of the votes hash.
  KEYS[1] poll hash            room:{id}:poll:<localId>   (v:<i> counts, voters, version…)
  KEYS[2] votes hash           room:{id}:poll:<localId>:votes   (userId -> '0,2')
  KEYS[3] voters sorted set    room:{id}:poll:<localId>:voters  (score i, member '<i>:<userId>'; not for anonymous polls)
  KEYS[4] member sorted set    room:{id}:members
  KEYS[5] update window        room:{id}:poll:<localId>:window  (exists while a PollUpdated window is open)
  ARGV[1] userId
  ARGV[2] now, ms (a poll whose closesAt has passed is closed, swept or not)
  ARGV[3] PollUpdated coalescing window, ms (0: open none)
  ARGV[4..n] the chosen option indexes, 0-based (none: retract the vote)
  Returns { status, changed, windowOpened, field, value, ... }: the poll's hash (HGETALL) follows
    changed 1 when the vote differs from the previous one (counts and version moved)
    windowOpened 1 when this call opened the update window: its caller announces the poll now and
    the latest state when the window ends; 0: a window is open (on any instance) or nothing changed
    status 0 OK, 2 NOT_MEMBER, 9 POLL_NOT_FOUND, 10 POLL_CLOSED, 11 BAD_OPTION (not an option of the
    poll, or twice), 12 SINGLE_CHOICE (more than one option for a single-choice poll)
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return { 9, 0, 0 } end
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then return { 2, 0, 0 } end
local poll = redis.call('HMGET', KEYS[1], 'closed', 'closesAt', 'optionCount', 'multiple', 'anonymous')
if poll[1] == '1' or (poll[2] ~= '' and tonumber(poll[2]) <= tonumber(ARGV[2])) then return { 10, 0, 0 } end
local count = tonumber(poll[3])
local chosen, seen = {}, {}
for i = 4, #ARGV do
  local index = tonumber(ARGV[i])
  if not index or index ~= math.floor(index) or index < 0 or index >= count or seen[index] then return { 11, 0, 0 } end
  seen[index] = true
  chosen[#chosen + 1] = index
end
if poll[4] ~= '1' and #chosen > 1 then return { 12, 0, 0 } end
table.sort(chosen)
local vote = table.concat(chosen, ',')
local previous = redis.call('HGET', KEYS[2], ARGV[1]) or ''
local changed = 0
if previous ~= vote then
  changed = 1
  local public = poll[5] ~= '1'
  for index in string.gmatch(previous, '%d+') do
    redis.call('HINCRBY', KEYS[1], 'v:' .. index, -1)
    if public then redis.call('ZREM', KEYS[3], index .. ':' .. ARGV[1]) end
  end
  for _, index in ipairs(chosen) do
    redis.call('HINCRBY', KEYS[1], 'v:' .. index, 1)
    if public then redis.call('ZADD', KEYS[3], index, index .. ':' .. ARGV[1]) end
  end
  if vote == '' then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('HINCRBY', KEYS[1], 'voters', -1)
  else
    redis.call('HSET', KEYS[2], ARGV[1], vote)
    if previous == '' then redis.call('HINCRBY', KEYS[1], 'voters', 1) end
  end
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
local opened = 0
if changed == 1 and tonumber(ARGV[3]) > 0 and redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[3]) then opened = 1 end
local result = { 0, changed, opened }
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do result[#result + 1] = v end
return result
