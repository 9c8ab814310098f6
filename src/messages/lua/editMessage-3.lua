--[[
  Edits a message's text: its author only, while a member, not once deleted.
  KEYS[1] room hash            room:{id}
  KEYS[2] member sorted set    room:{id}:members
  KEYS[3] message hash         room:{id}:messages
  ARGV[1] userId
  ARGV[2] seq
  ARGV[3] new text (already trimmed and checked)
  ARGV[4] now, epoch milliseconds
  ARGV[5] history epoch from the message id (another epoch: MESSAGE_NOT_FOUND)
  Returns { status, messageJson }
    status 0 OK, 1 ROOM_NOT_FOUND, 2 NOT_MEMBER, 4 MESSAGE_NOT_FOUND, 5 NOT_AUTHOR, 7 DELETED
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return { 1, '' } end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return { 2, '' } end
if (redis.call('HGET', KEYS[1], 'epoch') or '') ~= ARGV[5] then return { 4, '' } end
local raw = redis.call('HGET', KEYS[3], ARGV[2])
if not raw then return { 4, '' } end
local msg = cjson.decode(raw)
if msg.senderId ~= ARGV[1] then return { 5, '' } end
if msg.deleted then return { 7, '' } end
if msg.text == ARGV[3] then return { 0, raw } end
msg.text = ARGV[3]
msg.editedAt = tonumber(ARGV[4])
local json = cjson.encode(msg)
redis.call('HSET', KEYS[3], ARGV[2], json)
return { 0, json }
