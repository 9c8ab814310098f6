-- include: sendMessage setTyping indexMessage
--[[
  Sends a message (sendMessage) and, when it is created, runs what the features do with a stored
  message and its MessageAdded PUBLISH, all in one round trip: those commands need the seq and
  epoch only this script learns, so the caller queues them with placeholders it fills in.
  KEYS     sendMessage's 4 keys, then each deferred command's keys, in order
  ARGV[1]  n, the number of sendMessage's arguments; ARGV[2..n+1] those arguments
  then, per deferred command: kind ('s' an included script, 'c' a Redis command), its name, its
  key count, its argument count, its arguments. An argument that starts with a NUL byte is a
  placeholder: NUL followed by
    seq                the message's seq
    epoch              its room's history epoch
    id                 its id (base64url of roomId:epoch:seq, as message-id.ts encodes it)
    seq12              its seq zero-padded to 12 digits (search's member)
    trimmed12:<R>      the seq a retention of R messages trims with it, zero-padded, or ''
    event:<name JSON>  the MessageAdded event's JSON, the sender's name given as JSON
  Returns { sendMessage's reply } when no message was created (an error status, or a clientId
  seen before: nothing else runs), else { sendMessage's reply, each deferred command's reply }:
  a command that fails gives an error reply in its place and the others still run, as in a
  pipeline. Its keys belong to several features (some outside the room's hash tag): one Redis,
  not Redis Cluster, as the rest of Switchboard.
]]
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
local function b64url(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = string.byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local d1, d2 = math.floor(n / 262144) % 64, math.floor(n / 4096) % 64
    local d3, d4 = math.floor(n / 64) % 64, n % 64
    out[#out + 1] = B64:sub(d1 + 1, d1 + 1) .. B64:sub(d2 + 1, d2 + 1)
    if b then out[#out + 1] = B64:sub(d3 + 1, d3 + 1) end
    if c then out[#out + 1] = B64:sub(d4 + 1, d4 + 1) end
  end
  return table.concat(out)
end

local n = tonumber(ARGV[1])
local sendArgs = {}
for i = 1, n do sendArgs[i] = ARGV[1 + i] end
local sent = INCLUDED.sendMessage({ KEYS[1], KEYS[2], KEYS[3], KEYS[4] }, sendArgs)
if sent[1] ~= 0 or sent[3] ~= 1 then return { sent } end

local roomId, epoch, seqNumber = sendArgs[1], sent[5], sent[4]
local seq = string.format('%d', seqNumber)
local function fill(v)
  if string.byte(v, 1) ~= 0 then return v end
  local token, param = string.match(v, '^%z(%w+):?(.*)$')
  if token == 'seq' then return seq end
  if token == 'epoch' then return epoch end
  if token == 'id' then return b64url(roomId .. ':' .. epoch .. ':' .. seq) end
  if token == 'seq12' then return string.format('%012d', seqNumber) end
  if token == 'trimmed12' then
    local retention = tonumber(param)
    if retention > 0 and seqNumber > retention then return string.format('%012d', seqNumber - retention) end
    return ''
  end
  if token == 'event' then return '{"type":"MessageAdded","message":' .. sent[2] .. ',"senderName":' .. param .. '}' end
  error('unknown placeholder ' .. tostring(token))
end

local replies = { sent }
local k, a = 5, n + 2
while a <= #ARGV do
  local kind, name, keyCount, argCount = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  local keys, args = {}, {}
  for i = 1, keyCount do keys[i] = KEYS[k]; k = k + 1 end
  for i = 1, argCount do args[i] = fill(ARGV[a]); a = a + 1 end
  local ok, reply
  if kind == 's' then
    ok, reply = pcall(INCLUDED[name], keys, args)
  else
    local all = {}
    for i = 1, keyCount do all[#all + 1] = keys[i] end
    for i = 1, argCount do all[#all + 1] = args[i] end
    ok, reply = pcall(redis.call, name, unpack(all))
  end
  if not ok then
    reply = type(reply) == 'table' and reply.err and reply or redis.error_reply(tostring(reply))
  end
  replies[#replies + 1] = reply
end
return replies
