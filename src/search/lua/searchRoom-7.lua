--[[
  Searches one room's inverted index, newest first, below a position: messages holding every exact
  word and a word that starts with the prefix. Drives from the smallest candidate list (the rarest
  exact word, or the union of the prefix's terms) and checks the others per candidate, examining at
  most a budget of candidates per call: the work of a page is bounded whatever the room's size.
  Positions are (score = createdAt ms, member = zero-padded seq), ordered by score then seq
  (compared as numbers: Lua's string comparison follows redis-server's locale).
  KEYS[1] room hash              room:{id}
  KEYS[2] member sorted set      room:{id}:members
  KEYS[3] message hash           room:{id}:messages     (seq -> JSON)
  KEYS[4] term dictionary        room:{id}:search:dict
  KEYS[5] posting prefix         room:{id}:search:t:
  KEYS[6] all positions          room:{id}:search:all
  KEYS[7] doc hash               room:{id}:search:docs
  ARGV[1] viewerId (must be a member)
  ARGV[2] matches wanted at most
  ARGV[3] candidates examined at most
  ARGV[4] terms a prefix may expand to before candidates are checked against their own terms
  ARGV[5] bound score: matches lie strictly below (score, seq); '+inf' for the newest
  ARGV[6] bound seq (0: nothing of the bound score qualifies; 1e13: all of it does)
  ARGV[7] 1: return each match's message JSON; 0: positions only
  ARGV[8] the prefix word
  ARGV[9..] the exact words
  Returns { status, exhausted, frontierScore, frontierMember, score, member, [json], ... }
    status 0 OK, 1 ROOM_NOT_FOUND, 2 NOT_MEMBER
    exhausted 1 when nothing below the last match is left to examine; 0 when the call stopped
      early (enough matches, or the budget), at the frontier: the last position it examined
    Deleted messages and messages retention trimmed are never returned.
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return { 1, 1, '', '' } end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return { 2, 1, '', '' } end
local limit = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local maxExpansion = tonumber(ARGV[4])
local withJson = ARGV[7] == '1'
local prefix = ARGV[8]
local none = { 0, 1, '', '' }

-- The rarest exact word drives, unless the prefix's terms together are rarer.
local exactKeys, driverIndex, driverCard = {}, nil, nil
for i = 9, #ARGV do
  local key = KEYS[5] .. ARGV[i]
  local card = redis.call('ZCARD', key)
  if card == 0 then return none end
  exactKeys[#exactKeys + 1] = key
  if not driverCard or card < driverCard then driverIndex, driverCard = #exactKeys, card end
end
local expansion = redis.call('ZRANGEBYLEX', KEYS[4], '[' .. prefix, '[' .. prefix .. '\255', 'LIMIT', 0, maxExpansion + 1)
if #expansion == 0 then return none end
local drivers, checkPrefix = {}, true
if #expansion <= maxExpansion then
  local keys, card = {}, 0
  for _, term in ipairs(expansion) do
    keys[#keys + 1] = KEYS[5] .. term
    card = card + redis.call('ZCARD', KEYS[5] .. term)
  end
  if not driverCard or card < driverCard then drivers, checkPrefix, driverIndex = keys, false, nil end
end
if driverIndex then
  drivers = { exactKeys[driverIndex] }
elseif #drivers == 0 then
  drivers = { KEYS[6] } -- a prefix of too many terms and no exact word: every message is a candidate
end

-- Entries are { score, member, raw score, seq }.
local function greater(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[4] > b[4])
end

-- Up to `count` positions of `key` strictly below (score, member), newest first.
local function below(key, score, seq, count)
  local out = {}
  local max = '+inf'
  if score ~= '+inf' then
    local ties = redis.call('ZREVRANGEBYSCORE', key, score, score)
    for _, m in ipairs(ties) do
      if tonumber(m) < seq then
        out[#out + 1] = { tonumber(score), m, score, tonumber(m) }
        if #out == count then return out end
      end
    end
    max = '(' .. score
  end
  local rest = redis.call('ZREVRANGEBYSCORE', key, max, '-inf', 'WITHSCORES', 'LIMIT', 0, count - #out)
  for i = 1, #rest, 2 do out[#out + 1] = { tonumber(rest[i + 1]), rest[i], rest[i + 1], tonumber(rest[i]) } end
  return out
end

local function matches(member)
  for i, key in ipairs(exactKeys) do
    if i ~= driverIndex and not redis.call('ZSCORE', key, member) then return false end
  end
  if checkPrefix then
    local doc = redis.call('HGET', KEYS[7], member)
    if not doc then return false end
    local found = false
    for term in string.gmatch(doc, '%S+') do
      if string.sub(term, 1, #prefix) == prefix then
        found = true
        break
      end
    end
    if not found then return false end
  end
  -- Postings may briefly outlive a message (a delete or trim whose un-index has not run yet).
  local json = redis.call('HGET', KEYS[3], tonumber(member))
  if not json or string.find(json, '"deleted":true', 1, true) then return false end
  return json
end

local result = { 0, 0, '', '' }
local found, scanned = 0, 0
local boundScore, boundSeq = ARGV[5], tonumber(ARGV[6])
local chunk = math.min(budget, math.max(2 * limit, 32))
while true do
  local merged, seen, cutoff = {}, {}, nil
  for _, key in ipairs(drivers) do
    local got = below(key, boundScore, boundSeq, chunk)
    for _, e in ipairs(got) do
      if not seen[e[2]] then
        seen[e[2]] = true
        merged[#merged + 1] = e
      end
    end
    -- A list cut at `chunk` may hold more below its last position: nothing below it is safe yet.
    if #got == chunk and (not cutoff or greater(got[chunk], cutoff)) then cutoff = got[chunk] end
  end
  table.sort(merged, greater)
  for _, e in ipairs(merged) do
    if cutoff and greater(cutoff, e) then break end
    scanned = scanned + 1
    boundScore, boundSeq = e[3], e[4]
    local json = matches(e[2])
    if json then
      found = found + 1
      result[#result + 1] = e[3]
      result[#result + 1] = e[2]
      if withJson then result[#result + 1] = json end
    end
    if found == limit or scanned >= budget then
      result[3], result[4] = e[3], e[2]
      return result
    end
  end
  if not cutoff then
    result[2] = 1
    return result
  end
end
