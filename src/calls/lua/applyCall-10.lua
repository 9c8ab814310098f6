--[[
  Every change to a room's call, atomically: joinCall, leaveCall (and leaving the chat room),
  endCall, due timers (epoch rotation, departure timeout), a LiveKit webhook (deduplicated by its
  event id), and a sync with LiveKit's participant list. One script so that the participant set,
  the lifecycle, the epoch and the keys of a call can never disagree.

  KEYS[1]  room hash               room:{id}                  (ownerId)
  KEYS[2]  member sorted set       room:{id}:members
  KEYS[3]  call hash               room:{id}:call             (id, startedAt, epoch, sid, syncedAt, emptySince, rekeyAt)
  KEYS[4]  participants hash       room:{id}:call:participants  userId -> joinedAtMs|participant sid|seenAtMs
  KEYS[5]  media keys hash         room:{id}:call:keys        userId -> JSON key of the current epoch
  KEYS[6]  gone set                room:{id}:call:gone        participant sids that left
  KEYS[7]  ended hash              room:{id}:call:ended       (at, sid, id) of the last ended call
  KEYS[8]  webhook event key       room:{id}:call:event:<id>  (webhook only; any key of the slot otherwise)
  KEYS[9]  timers sorted set       calls:timers               roomId -> next due ms
  KEYS[10] active sorted set       calls:active               roomId -> last sync ms
  ARGV[1]  operation: join | leave | end | settle | webhook | sync
  ARGV[2]  roomId
  ARGV[3]  now, ms
  ARGV[4]  departure timeout, ms (an empty call ends this long after its last participant left)
  ARGV[5]  rekey window, ms (leaves within it cause one epoch rotation, at its end)
  join:    ARGV[6] userId, ARGV[7] a fresh call id (used if no call is on)
  leave:   ARGV[6] userId
  end:     ARGV[6] viewerId (must be the room owner)
  settle:  nothing more
  webhook: ARGV[6] event, ARGV[7] LiveKit room sid, ARGV[8] participant sid, ARGV[9] identity,
           ARGV[10] participant joinedAt ms (0: unknown), ARGV[11] event createdAt ms (LiveKit
           stamps seconds), ARGV[12] a fresh call id, ARGV[13] '1' for a standard participant
  sync:    ARGV[6] when the list was fetched, ms, ARGV[7] join grace, ms, then per LiveKit
           participant: identity, participant sid, joinedAt ms
  Returns { status, change, nextDue, call, evict... }
    status 0 OK, 1 ROOM_NOT_FOUND, 2 NOT_MEMBER, 6 NOT_OWNER, 20 NO_CALL, 23 DUPLICATE (webhook
      event already applied); anything but 0 comes alone
    change 0 nothing visible, 1 participants or lifecycle changed, 2 the epoch rotated (rekey),
      3 the call ended
    nextDue when this call next has a timer due, ms (0: none)
    call JSON { id, startedAt, epoch, endedAt?, participants: [[userId, joinedAtMs]...] } after the
      change (absent when nothing changed)
    evict (sync) identities LiveKit lists that are not members of the room
]]
local CALL_KEY, PARTS, MEDIA_KEYS, GONE, ENDED, EVENT, TIMERS, ACTIVE =
  KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local op, roomId, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local departureMs, rekeyMs = tonumber(ARGV[4]), tonumber(ARGV[5])
-- Late webhooks of an ended call, and the event ids already applied, are remembered a day.
local MEMORY_MS = 86400000
-- LiveKit stamps events in whole seconds: an event is known to precede an instant only when its
-- second ended before it.
local SECOND = 1000

local function isMember(userId) return redis.call('ZSCORE', KEYS[2], userId) ~= false end

local function parseEntry(value)
  local joinedAt, sid, seen = string.match(value, '^(%d+)|([^|]*)|(%d+)$')
  return tonumber(joinedAt), sid, tonumber(seen)
end

local function loadCall()
  local flat = redis.call('HGETALL', CALL_KEY)
  if #flat == 0 then return nil end
  local c = {}
  for i = 1, #flat, 2 do c[flat[i]] = flat[i + 1] end
  return c
end

local function set(c, field, value)
  c[field] = tostring(value)
  redis.call('HSET', CALL_KEY, field, value)
end

local function unset(c, field)
  c[field] = nil
  redis.call('HDEL', CALL_KEY, field)
end

local function participants()
  local flat = redis.call('HGETALL', PARTS)
  local list = {}
  for i = 1, #flat, 2 do
    local joinedAt, sid, seen = parseEntry(flat[i + 1])
    list[#list + 1] = { id = flat[i], joinedAt = joinedAt, sid = sid, seen = seen }
  end
  return list
end

local function snapshot(c, endedAt)
  local list = {}
  if not endedAt then
    for _, p in ipairs(participants()) do list[#list + 1] = { p.id, p.joinedAt } end
    table.sort(list, function(a, b)
      if a[2] ~= b[2] then return a[2] < b[2] end
      return a[1] < b[1]
    end)
  end
  return cjson.encode({
    id = c.id, startedAt = tonumber(c.startedAt), epoch = tonumber(c.epoch), endedAt = endedAt, participants = list,
  })
end

local function create(callId, sid)
  redis.call('DEL', PARTS, MEDIA_KEYS)
  redis.call('HSET', CALL_KEY, 'id', callId, 'startedAt', now, 'epoch', 0, 'sid', sid, 'syncedAt', now)
  redis.call('ZADD', ACTIVE, now, roomId)
  return { id = callId, startedAt = tostring(now), epoch = '0', sid = sid, syncedAt = tostring(now) }
end

-- Adds a participant (true) or refreshes one (false): a known sid is kept over an unknown one.
local function addParticipant(c, userId, joinedAt, sid)
  local current = redis.call('HGET', PARTS, userId)
  if current then
    local since, knownSid = parseEntry(current)
    if sid == '' then sid = knownSid end
    redis.call('HSET', PARTS, userId, string.format('%d|%s|%d', since, sid, now))
    return false
  end
  redis.call('HSET', PARTS, userId, string.format('%d|%s|%d', joinedAt, sid, now))
  if c.emptySince then unset(c, 'emptySince') end
  return true
end

-- A leave: the leaver's key stops being served at once, and a rotation is due at the end of the
-- rekey window (one for every leave inside it).
local function removeParticipant(c, userId)
  if redis.call('HDEL', PARTS, userId) == 0 then return false end
  redis.call('HDEL', MEDIA_KEYS, userId)
  if not c.rekeyAt then set(c, 'rekeyAt', now + rekeyMs) end
  if redis.call('HLEN', PARTS) == 0 then set(c, 'emptySince', now) end
  return true
end

local function finish(c, sid)
  if not sid or sid == '' then sid = c.sid or '' end
  redis.call('HSET', ENDED, 'at', now, 'sid', sid, 'id', c.id)
  redis.call('PEXPIRE', ENDED, MEMORY_MS)
  redis.call('DEL', CALL_KEY, PARTS, MEDIA_KEYS, GONE)
  redis.call('ZREM', TIMERS, roomId)
  redis.call('ZREM', ACTIVE, roomId)
  return { 0, 3, 0, snapshot(c, now) }
end

-- Applies what is due (a rotation, a departure timeout), files the next due time, and answers.
local function done(c, change, evict)
  if c.rekeyAt and tonumber(c.rekeyAt) <= now then
    unset(c, 'rekeyAt')
    set(c, 'epoch', tonumber(c.epoch) + 1)
    redis.call('DEL', MEDIA_KEYS)
    change = 2
  end
  if c.emptySince and tonumber(c.emptySince) + departureMs <= now and redis.call('HLEN', PARTS) == 0 then
    return finish(c)
  end
  local due = 0
  if c.rekeyAt then due = tonumber(c.rekeyAt) end
  if c.emptySince then
    local at = tonumber(c.emptySince) + departureMs
    if due == 0 or at < due then due = at end
  end
  if due > 0 then redis.call('ZADD', TIMERS, due, roomId) else redis.call('ZREM', TIMERS, roomId) end
  if change == 0 and (evict == nil or #evict == 0) then return { 0, 0, due } end
  local out = { 0, change, due, snapshot(c) }
  for _, identity in ipairs(evict or {}) do out[#out + 1] = identity end
  return out
end

if op == 'join' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return { 1 } end
  if not isMember(ARGV[6]) then return { 2 } end
  local c, change = loadCall(), 0
  if not c then
    c = create(ARGV[7], '')
    change = 1
  end
  if addParticipant(c, ARGV[6], now, '') then change = 1 end
  return done(c, change)
end

if op == 'leave' then
  local c = loadCall()
  if not c then return { 20 } end
  return done(c, removeParticipant(c, ARGV[6]) and 1 or 0)
end

if op == 'end' then
  local owner = redis.call('HGET', KEYS[1], 'ownerId')
  if not owner then return { 1 } end
  if owner ~= ARGV[6] or not isMember(ARGV[6]) then return { 6 } end
  local c = loadCall()
  if not c then return { 20 } end
  return finish(c)
end

if op == 'settle' then
  local c = loadCall()
  if not c then
    redis.call('ZREM', TIMERS, roomId)
    return { 20 }
  end
  return done(c, 0)
end

if op == 'webhook' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return { 1 } end
  if not redis.call('SET', EVENT, '1', 'NX', 'PX', MEMORY_MS) then return { 23 } end
  local event, roomSid, sid, identity = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
  local joinedAt, createdAt = tonumber(ARGV[10]), tonumber(ARGV[11])
  if joinedAt <= 0 then joinedAt = now end
  local c = loadCall()
  local endedSid = redis.call('HGET', ENDED, 'sid')
  local endedAt = tonumber(redis.call('HGET', ENDED, 'at') or '0')
  -- An event of a LiveKit session that already finished, or stamped before the last call ended.
  local stale = (roomSid ~= '' and roomSid == endedSid) or (endedAt > 0 and createdAt + SECOND <= endedAt)
  local olderThanCall = c ~= nil and createdAt + SECOND <= tonumber(c.startedAt)

  if event == 'room_started' then
    if not c or stale or olderThanCall then return { 0, 0 } end
    set(c, 'sid', roomSid)
    return done(c, 0)
  end

  if event == 'room_finished' then
    if c and (c.sid == roomSid or (c.sid == '' and not olderThanCall)) then return finish(c, roomSid) end
    if not c and roomSid ~= '' then
      -- No call here (it ended first): remember the session, so its late joins start nothing.
      redis.call('HSET', ENDED, 'sid', roomSid, 'at', math.max(endedAt, createdAt))
      redis.call('PEXPIRE', ENDED, MEMORY_MS)
    end
    return { 0, 0 }
  end

  if event == 'participant_joined' then
    if ARGV[13] ~= '1' or sid == '' or identity == '' then return { 0, 0 } end
    if stale or redis.call('SISMEMBER', GONE, sid) == 1 then return { 0, 0 } end
    if not isMember(identity) then return { 2 } end
    local change = 0
    if not c then
      c = create(ARGV[12], roomSid)
      change = 1
    elseif roomSid ~= '' and c.sid ~= roomSid then
      -- Another LiveKit session of this room: an old one's late join, or a new one we missed the start of.
      if olderThanCall then return { 0, 0 } end
      set(c, 'sid', roomSid)
    end
    if addParticipant(c, identity, joinedAt, sid) then change = 1 end
    return done(c, change)
  end

  if event == 'participant_left' or event == 'participant_connection_aborted' then
    if sid ~= '' then
      redis.call('SADD', GONE, sid)
      redis.call('PEXPIRE', GONE, MEMORY_MS)
    end
    if not c or identity == '' then return { 0, 0 } end
    local current = redis.call('HGET', PARTS, identity)
    if not current then return { 0, 0 } end
    local _, knownSid, seen = parseEntry(current)
    -- Only the session we know them by; one never seen counts unless it predates their join.
    if knownSid == sid or (knownSid == '' and createdAt + SECOND > seen) then
      return done(c, removeParticipant(c, identity) and 1 or 0)
    end
    return { 0, 0 }
  end
  return { 0, 0 }
end

if op == 'sync' then
  local c = loadCall()
  if not c then return { 20 } end
  local fetchedAt, graceMs = tonumber(ARGV[6]), tonumber(ARGV[7])
  local listed, evict, change = {}, {}, 0
  for i = 8, #ARGV, 3 do
    local identity, sid, joinedAt = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
    -- A sid that left stays gone: the list may predate its participant_left.
    if redis.call('SISMEMBER', GONE, sid) == 0 then
      if isMember(identity) then
        listed[identity] = true
        if addParticipant(c, identity, joinedAt > 0 and joinedAt or now, sid) then change = 1 end
      else
        evict[#evict + 1] = identity
      end
    end
  end
  -- The list replaces what webhooks built, except what it cannot know: participants recorded after
  -- it was fetched, and joinCall participants still connecting within the grace.
  for _, p in ipairs(participants()) do
    if not listed[p.id] and p.seen <= fetchedAt and not (p.sid == '' and p.joinedAt + graceMs > now) then
      removeParticipant(c, p.id)
      change = 1
    end
  end
  set(c, 'syncedAt', fetchedAt)
  redis.call('ZADD', ACTIVE, fetchedAt, roomId)
  return done(c, change, evict)
end

return redis.error_reply('applyCall: unknown operation ' .. tostring(op))
