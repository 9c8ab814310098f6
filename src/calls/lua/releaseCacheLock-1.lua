--[[
  Releases a cache-fill lock if it is still the caller's (it may have expired and been taken by
  another instance meanwhile).
  KEYS[1] lock key     <cache key>:lock
  ARGV[1] the caller's lock token
  Returns 1 released, 0 not the caller's (or gone)
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
