--[[
  What a claimed push says: how many of the claimed messages the recipient still has not read
  (deleted ones and everything up to their read watermark left out), and the latest of them.
  KEYS[1] room hash                room:{id}          (name, epoch)
  KEYS[2] member sorted set        room:{id}:members
  KEYS[3] message hash             room:{id}:messages (seq -> JSON)
  KEYS[4] deleted sorted set       room:{id}:deleted
  KEYS[5] own marks hash           room:{id}:readOwn  (userId -> seq)
  ARGV[1] recipient userId
  ARGV[2] from: the claim covers the messages after it…
  ARGV[3] to: …up to this seq
  ARGV[4] the history epoch the claim was made in
  Returns { status, count, latestJson, roomName }
    status 0 OK, 1 GONE (no such room, or another history), 2 NOT_MEMBER
    latestJson is '' when no message is left to push (or the last 100 of the range are deleted)
]]
local room = redis.call('HMGET', KEYS[1], 'name', 'epoch')
if not room[1] or (room[2] or '') ~= ARGV[4] then return { 1, 0, '', '' } end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return { 2, 0, '', room[1] } end
local read = tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0')
local from = math.max(tonumber(ARGV[2]), read)
local to = tonumber(ARGV[3])
if to <= from then return { 0, 0, '', room[1] } end
local count = to - from - redis.call('ZCOUNT', KEYS[4], '(' .. from, to)
local latest = ''
local seq = to
while latest == '' and seq > from and seq > to - 100 do
  local json = redis.call('HGET', KEYS[3], seq)
  if json and not redis.call('ZSCORE', KEYS[4], seq) then latest = json end
  seq = seq - 1
end
return { 0, count, latest, room[1] }
