--[[
  Stores a participant's media key for the call's current epoch (replacing their previous one),
  after the service verified its signature for exactly that call and epoch.
  KEYS[1] member sorted set     room:{id}:members
  KEYS[2] call hash             room:{id}:call               (id, epoch)
  KEYS[3] participants hash     room:{id}:call:participants
  KEYS[4] media keys hash       room:{id}:call:keys          userId -> JSON key
  ARGV[1] userId
  ARGV[2] call id the signature covers
  ARGV[3] epoch the signature covers
  ARGV[4] the key, JSON (with its expiresAt, ms)
  ARGV[5] now, ms
  ARGV[6] time to live, ms
  Returns status: 0 OK, 2 NOT_MEMBER, 20 NO_CALL, 21 NOT_PARTICIPANT, 22 STALE (the call ended or
    its epoch rotated since the signature was checked: sign again)
]]
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 2 end
local call = redis.call('HMGET', KEYS[2], 'id', 'epoch')
if not call[1] then return 20 end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 21 end
if call[1] ~= ARGV[2] or call[2] ~= ARGV[3] then return 22 end
local now = tonumber(ARGV[5])
local stored = redis.call('HGETALL', KEYS[4])
for i = 1, #stored, 2 do
  if tonumber(cjson.decode(stored[i + 1]).expiresAt) <= now then redis.call('HDEL', KEYS[4], stored[i]) end
end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
-- The hash lives as long as its latest key: every key is gone after its TTL, call or no call.
local ttl = tonumber(ARGV[6])
if redis.call('PTTL', KEYS[4]) < ttl then redis.call('PEXPIRE', KEYS[4], ttl) end
return 0
