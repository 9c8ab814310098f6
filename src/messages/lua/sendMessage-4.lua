--[[
  Stores a message: membership check, clientId dedupe, seq allocation, store, retention trim,
  room activity.
  KEYS[1] room hash            room:{id}            (fields seq, epoch, firstSeq, lastActivityAt)
  KEYS[2] member sorted set    room:{id}:members
  KEYS[3] message hash         room:{id}:messages   (seq -> JSON)
  KEYS[4] dedupe key           room:{id}:dedupe:... (ignored when ARGV[4] is '')
  ARGV[1] roomId
  ARGV[2] senderId
  ARGV[3] text (already trimmed and checked)
  ARGV[4] clientId, or '' for none
  ARGV[5] now, epoch milliseconds
  ARGV[6] dedupe TTL in seconds
  ARGV[7] retention: messages kept per room, 0 for all
  Returns { status, messageJson, created }, and for a new message also its seq and its room's
  history epoch: { 0, messageJson, 1, seq, epoch } (so a caller need not decode the JSON for them)
    status 0 OK, 1 ROOM_NOT_FOUND, 2 NOT_MEMBER
    created 1 for a new message, 0 when the clientId was seen (the original is returned)
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return { 1, '', 0 } end
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then return { 2, '', 0 } end
if ARGV[4] ~= '' then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    local original = redis.call('HGET', KEYS[3], seen)
    if original then return { 0, original, 0 } end
  end
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local clientId = cjson.null
if ARGV[4] ~= '' then clientId = ARGV[4] end
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local json = cjson.encode({
  roomId = ARGV[1],
  epoch = epoch,
  seq = seq,
  senderId = ARGV[2],
  text = ARGV[3],
  clientId = clientId,
  createdAt = tonumber(ARGV[5]),
  editedAt = cjson.null,
  deleted = false,
})
redis.call('HSET', KEYS[3], seq, json)
if ARGV[4] ~= '' then redis.call('SET', KEYS[4], seq, 'EX', ARGV[6]) end
local retention = tonumber(ARGV[7] or '0')
if retention > 0 and seq > retention then
  -- One message leaves per message sent, so the window stays exactly `retention` long.
  redis.call('HDEL', KEYS[3], seq - retention)
  redis.call('HSET', KEYS[1], 'lastActivityAt', ARGV[5], 'firstSeq', seq - retention + 1)
else
  redis.call('HSET', KEYS[1], 'lastActivityAt', ARGV[5])
end
return { 0, json, 1, seq, epoch }
