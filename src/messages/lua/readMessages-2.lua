--[[
  Reads a run of messages with the room's position, atomically (a catch-up read must know whether
  a missing message was trimmed, reset, or not sent yet).
  KEYS[1] room hash            room:{id}            (fields seq, epoch, firstSeq)
  KEYS[2] message hash         room:{id}:messages
  ARGV[1] first seq to read
  ARGV[2] last seq to read (inclusive; capped at the room's latest seq)
  Returns { status, epoch, firstSeq, lastSeq, messageJson... }
    status 0 OK, 1 ROOM_NOT_FOUND; messages run from ARGV[1] and stop at the first missing one
]]
local room = redis.call('HMGET', KEYS[1], 'id', 'epoch', 'firstSeq', 'seq')
if not room[1] then return { 1 } end
local epoch = room[2] or ''
local firstSeq = tonumber(room[3] or '1')
local lastSeq = tonumber(room[4] or '0')
local result = { 0, epoch, firstSeq, lastSeq }
local from = math.max(tonumber(ARGV[1]), firstSeq)
local to = math.min(tonumber(ARGV[2]), lastSeq)
if from ~= tonumber(ARGV[1]) then return result end
for seq = from, to do
  local json = redis.call('HGET', KEYS[2], seq)
  if not json then break end
  result[#result + 1] = json
end
return result
