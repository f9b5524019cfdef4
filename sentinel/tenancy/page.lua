--[[ page.lua: one page of an owner's objects of one kind, cut atomically.

KEYS[1]  sorted set  <prefix>:owned:{<owner>}:<kind>  member <object id>, score <created_at, s>

ARGV[1]  the id to start after ("" for the start; an id not in the set also means the start)
ARGV[2]  how many ids to return at most (the page size plus one, to learn whether more follow)
ARGV[3]  "1" for ascending (oldest first), "0" for newest first

Redis orders equal scores by member bytes, so the order is (created_at, id) or its exact
reverse. The rank of ARGV[1] and the range after it are read in one atomic call, so an object
claimed meanwhile cannot shift the page.
Reply: the ids, in page order.
]]

local ascending = ARGV[3] == '1'
local start = 0
if ARGV[1] ~= '' then
  local rank
  if ascending then
    rank = redis.call('ZRANK', KEYS[1], ARGV[1])
  else
    rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
  end
  if rank then
    start = rank + 1
  end
end
local stop = start + tonumber(ARGV[2]) - 1
if ascending then
  return redis.call('ZRANGE', KEYS[1], start, stop)
end
return redis.call('ZREVRANGE', KEYS[1], start, stop)
