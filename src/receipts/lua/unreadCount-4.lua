--[[
  A member's unread count: messages after their own watermark, not deleted (their own messages are
  never after it: sending moves the sender's watermark). Seq arithmetic, no scan.
  KEYS[1] room hash                room:{id}          (seq)
  KEYS[2] own marks hash           room:{id}:readOwn
  KEYS[3] deleted sorted set       room:{id}:deleted
  KEYS[4] member sorted set        room:{id}:members
  ARGV[1] userId
  Returns { unread, ownSeq }   (0, 0 for a non-member)
]]
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then return { 0, 0 } end
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local own = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if own >= last then return { 0, own } end
local deleted = redis.call('ZCOUNT', KEYS[3], '(' .. own, last)
return { last - own - deleted, own }
