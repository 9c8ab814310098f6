--[[
  Reads a cache entry under the current versions of the namespaces it depends on, and takes the
  entry's load lock when it is missing or stale (one caller loads; the others wait or serve stale).
  KEYS[1] namespace versions hash   cache:ns     (namespace -> version; absent counts as 0)
  KEYS[2] entry key prefix          cache:e:     (entry = prefix .. digest, lock = entry .. ':lock')
  KEYS[3] namespace set             e.g. user:{id}:rooms: each member m is namespace ARGV[2] .. m
                                    (cache:none when the entry depends on no set)
  ARGV[1] name: the caller's key
  ARGV[2] prefix that turns the set's members into namespaces
  ARGV[3] lock time-to-live, ms
  ARGV[4] now, epoch ms
  ARGV[5] lock token
  ARGV[6..] namespaces the entry depends on besides the set's
  Returns { state, digest, value, member... }
    state 1 fresh; 2 stale, and this call took the lock (serve it, refresh it); 3 stale, locked
          elsewhere (serve it); 0 missing, and this call took the lock (load it); 4 missing,
          locked elsewhere (wait for it)
    digest  sha1 of the name and every namespace with its version: the entry is prefix .. digest
    value   the stored entry or '': 13-digit freshUntil (ms), a codec byte, the payload
    member  the set's members, sorted (only when the caller may load: states 0, 2 and 4)
]]
local members = redis.call('SMEMBERS', KEYS[3])
table.sort(members)
local namespaces = {}
for i = 6, #ARGV do namespaces[#namespaces + 1] = ARGV[i] end
for _, m in ipairs(members) do namespaces[#namespaces + 1] = ARGV[2] .. m end
local parts = { ARGV[1] }
-- HMGET in chunks: unpack() of thousands of arguments would overflow Lua's C stack.
for i = 1, #namespaces, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #namespaces) do chunk[#chunk + 1] = namespaces[j] end
  local versions = redis.call('HMGET', KEYS[1], unpack(chunk))
  for j, ns in ipairs(chunk) do parts[#parts + 1] = ns .. '=' .. (versions[j] or '0') end
end
local digest = redis.sha1hex(table.concat(parts, '\n'))
local entry = KEYS[2] .. digest
local value = redis.call('GET', entry)
local state
if value and tonumber(string.sub(value, 1, 13)) > tonumber(ARGV[4]) then
  return { 1, digest, value }
end
local locked = redis.call('SET', entry .. ':lock', ARGV[5], 'NX', 'PX', ARGV[3])
if value then
  if locked then state = 2 else return { 3, digest, value } end
else
  if locked then state = 0 else state = 4 end
end
local result = { state, digest, value or '' }
for _, m in ipairs(members) do result[#result + 1] = m end
return result
