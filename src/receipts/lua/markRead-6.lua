--[[
  Moves a member's read watermark forward (never back).
  KEYS[1] room hash                room:{id}          (seq)
  KEYS[2] member sorted set        room:{id}:members
  KEYS[3] public marks sorted set  room:{id}:read     (userId -> seq)
  KEYS[4] own marks hash           room:{id}:readOwn  (userId -> seq)
  KEYS[5] public receipt window    room:{id}:rcpt:<user>:pub   (exists while a window is open)
  KEYS[6] private receipt window   room:{id}:rcpt:<user>:priv
  ARGV[1] userId
  ARGV[2] seq read up to
  ARGV[3] 1 private (own unread state only), 0 public
  ARGV[4] history epoch of the message id ('' to skip the check)
  ARGV[5] receipt coalescing window, ms (0: no receipt to announce, open no window)
  Returns { status, ownChanged, publicChanged, ownSeq, windowOpened }
    windowOpened 1 when this call opened the (public or private) receipt window: its caller sends
    the receipt now and the latest one when the window ends; 0: a window is open (on any instance)
    status 0 OK, 1 ROOM_NOT_FOUND, 2 NOT_MEMBER, 4 MESSAGE_NOT_FOUND (seq beyond the room's latest)
]]
local last = redis.call('HGET', KEYS[1], 'seq')
if not last then return { 1, 0, 0, 0, 0 } end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return { 2, 0, 0, 0, 0 } end
if ARGV[4] ~= '' and (redis.call('HGET', KEYS[1], 'epoch') or '') ~= ARGV[4] then return { 4, 0, 0, 0, 0 } end
local seq = tonumber(ARGV[2])
if seq > tonumber(last) then return { 4, 0, 0, 0, 0 } end
local own = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
local ownChanged = 0
if seq > own then
  redis.call('HSET', KEYS[4], ARGV[1], seq)
  own = seq
  ownChanged = 1
end
local publicChanged = 0
if ARGV[3] ~= '1' then
  local pub = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]) or '0')
  if seq > pub then
    redis.call('ZADD', KEYS[3], seq, ARGV[1])
    publicChanged = 1
  end
end
local opened = 0
local window = nil
if publicChanged == 1 then window = KEYS[5] elseif ownChanged == 1 then window = KEYS[6] end
if window and tonumber(ARGV[5]) > 0 and redis.call('SET', window, '1', 'NX', 'PX', ARGV[5]) then opened = 1 end
return { 0, ownChanged, publicChanged, own, opened }
