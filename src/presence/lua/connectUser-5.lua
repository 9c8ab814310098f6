-- include: registerConnection touchUser
--[[
  A connection of an authenticated user, in one command: registerConnection, then touchUser (the
  user exists, with their token's name, from their first connection as from their first request).
  KEYS[1..4] registerConnection's keys (user connection set, user presence hash, instance
             connections, grace sorted set)
  KEYS[5]    user hash   user:{id}
  ARGV[1] connectionId
  ARGV[2] userId
  ARGV[3] display name
  ARGV[4] now, epoch milliseconds (the user's createdAt, first time only)
  Returns registerConnection's reply
]]
local reply = INCLUDED.registerConnection({ KEYS[1], KEYS[2], KEYS[3], KEYS[4] }, { ARGV[1], ARGV[2] })
INCLUDED.touchUser({ KEYS[5] }, { ARGV[2], ARGV[3], ARGV[4] })
return reply
