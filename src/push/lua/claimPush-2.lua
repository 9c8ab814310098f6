--[[
  Decides, when a delivery job runs, whether its recipient gets a push and for which messages.
  Each (recipient, room) keeps a push watermark: the first job of a burst to run claims every
  message after max(watermark, read watermark) up to the room's latest, and moves the watermark
  there; the jobs of the other messages in that range find themselves covered. So a burst makes
  one push, and no message is pushed twice to one recipient, whatever order the jobs run in.
  KEYS[1] user connection set      user:{id}:conns
  KEYS[2] push state hash          user:{id}:push   (roomId -> JSON { e epoch, w watermark,
                                                     j last claiming job, f/t its range })
  ARGV[1] roomId
  ARGV[2] jobId
  ARGV[3] seq of the job's message
  ARGV[4] the room's history epoch now
  ARGV[5] the room's latest seq now
  ARGV[6] the recipient's own read watermark now
  Returns { status, from, to }
    status 0 CLAIMED: push the messages after `from` up to `to` (also for a job re-running its
             claim after a crash, which gets the same range back)
           1 ONLINE: the recipient has a live connection
           2 COVERED: an earlier push took this message
           3 READ: the recipient read past it
]]
if redis.call('SCARD', KEYS[1]) > 0 then return { 1, 0, 0 } end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
local state = raw and cjson.decode(raw) or {}
-- Another history (the room was reset): its seqs start over, so does the watermark.
if state.e ~= ARGV[4] then state = {} end
if state.j == ARGV[2] then return { 0, state.f, state.t } end
local seq = tonumber(ARGV[3])
if seq <= tonumber(state.w or 0) then return { 2, 0, 0 } end
local read = tonumber(ARGV[6])
if seq <= read then return { 3, 0, 0 } end
local from = math.max(tonumber(state.w or 0), read)
local to = math.max(tonumber(ARGV[5]), seq)
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({ e = ARGV[4], w = to, j = ARGV[2], f = from, t = to }))
return { 0, from, to }
