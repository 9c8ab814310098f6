--[[
  Creates or refreshes a user from their token, in one command.
  KEYS[1] user hash   user:{id}   (fields id, name, createdAt)
  ARGV[1] userId
  ARGV[2] display name
  ARGV[3] now, epoch milliseconds (createdAt, first time only)
  Returns 1 when the user was created, 0 when it existed
]]
local created = redis.call('HSETNX', KEYS[1], 'createdAt', ARGV[3])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2])
return created
