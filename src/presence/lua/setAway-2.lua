--[[
  Sets or clears a connected user's AWAY flag.
  KEYS[1] user connection set      user:{id}:conns
  KEYS[2] user presence hash       user:{id}:presence
  ARGV[1] '1' for AWAY, '' for ONLINE
  Returns { changed, connections }: changed 1 when a connected user's status changed
]]
local count = redis.call('SCARD', KEYS[1])
if count == 0 or redis.call('HGET', KEYS[2], 'state') ~= 'ONLINE' then return { 0, count } end
local was = redis.call('HGET', KEYS[2], 'away') or ''
if was == ARGV[1] then return { 0, count } end
redis.call('HSET', KEYS[2], 'away', ARGV[1])
return { 1, count }
