--[[
  Deletes a message: its author, or the room owner; both must be members. Idempotent.
  The message keeps its seq; its text becomes empty.
  KEYS[1] room hash            room:{id}
  KEYS[2] member sorted set    room:{id}:members
  KEYS[3] message hash         room:{id}:messages
  ARGV[1] userId
  ARGV[2] seq
  ARGV[3] now, epoch milliseconds
  ARGV[4] history epoch from the message id (another epoch: MESSAGE_NOT_FOUND)
  Returns { status, messageJson, changed }
    status 0 OK, 1 ROOM_NOT_FOUND, 2 NOT_MEMBER, 4 MESSAGE_NOT_FOUND, 5 NOT_AUTHOR
    changed 1 when this call deleted it, 0 when it was already deleted
]]
local owner = redis.call('HGET', KEYS[1], 'ownerId')
if not owner then return { 1, '', 0 } end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return { 2, '', 0 } end
if (redis.call('HGET', KEYS[1], 'epoch') or '') ~= ARGV[4] then return { 4, '', 0 } end
local raw = redis.call('HGET', KEYS[3], ARGV[2])
if not raw then return { 4, '', 0 } end
local msg = cjson.decode(raw)
if msg.senderId ~= ARGV[1] and owner ~= ARGV[1] then return { 5, '', 0 } end
if msg.deleted then return { 0, raw, 0 } end
msg.text = ''
msg.deleted = true
msg.deletedAt = tonumber(ARGV[3])
local json = cjson.encode(msg)
redis.call('HSET', KEYS[3], ARGV[2], json)
return { 0, json, 1 }
