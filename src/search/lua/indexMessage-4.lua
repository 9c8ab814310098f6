--[[
  Indexes a message in its room's inverted index, replacing what it was indexed under before (an
  edit re-indexes); with no term, only un-indexes it (a delete). Also un-indexes the message that
  retention trimmed, if any. Terms come from the message's doc entry, so no text is needed to
  un-index.
  KEYS[1] term dictionary        room:{id}:search:dict   (sorted set, score 0)
  KEYS[2] posting prefix         room:{id}:search:t:     (posting of a term = prefix .. term)
  KEYS[3] all positions          room:{id}:search:all
  KEYS[4] doc hash               room:{id}:search:docs   (member -> terms, space-separated)
  ARGV[1] member: the message's zero-padded seq
  ARGV[2] score: the message's createdAt, ms
  ARGV[3] member of the message retention trimmed ('' for none)
  ARGV[4..] the message's distinct terms (none: un-index only)
  Returns the number of terms indexed
]]
local function unindex(member)
  local doc = redis.call('HGET', KEYS[4], member)
  if not doc then return end
  for term in string.gmatch(doc, '%S+') do
    local posting = KEYS[2] .. term
    redis.call('ZREM', posting, member)
    -- A term no message holds any more leaves the dictionary, so prefixes never expand to it.
    if redis.call('EXISTS', posting) == 0 then redis.call('ZREM', KEYS[1], term) end
  end
  redis.call('HDEL', KEYS[4], member)
  redis.call('ZREM', KEYS[3], member)
end

if ARGV[3] ~= '' then unindex(ARGV[3]) end
unindex(ARGV[1])
if #ARGV < 4 then return 0 end
local terms = {}
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[2] .. ARGV[i], ARGV[2], ARGV[1])
  redis.call('ZADD', KEYS[1], 0, ARGV[i])
  terms[#terms + 1] = ARGV[i]
end
redis.call('HSET', KEYS[4], ARGV[1], table.concat(terms, ' '))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return #terms
