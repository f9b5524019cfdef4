--[[ usage_counters.lua: count records' usage into their key's minute and day hashes, each
record at most once (FCALL @NAME@; see sentinel.redis_io.functions for the batch format).

Each operation names its own run of keys:
K[1]      minute hash               sentinel:{<key>}:usage:m:<yyyymmddHHMM>
K[2]      day hash                  sentinel:{<key>}:usage:d:<yyyymmdd>
K[2 + i]  record i's dedupe marker  sentinel:{<key>}:usage:seen:<record_id>
Fields: the minute hash TTL, the day hash TTL and the dedupe marker TTL (seconds), then for
each record in K order its prompt, completion and total tokens (each >= 0, below 2^53).
Reply: one integer per record, 1 when counted, 0 when its record id was already counted (a
replay). The records an operation counts are summed first, so each hash gets four HINCRBY
per operation, not per record. A count of 2^53 or more comes as a string of digits (a Lua
number would round it): its record is added on its own, as the digits sent, so every count
stays exact, and so does a sum that would pass 2^53. A key's keys share the {<key>} hash
tag, so an operation is valid on Redis Cluster.
]]

local NAMES = {'prompt_tokens', 'completion_tokens', 'total_tokens'}
local EXACT = 9007199254740992 -- 2^53: doubles hold every integer below it

local function add(K, name, amount)
  if type(amount) == 'number' then amount = string.format('%d', amount) end
  redis.call('HINCRBY', K[1], name, amount)
  redis.call('HINCRBY', K[2], name, amount)
end

local function count(K, A, o)
  local counted, requests, sums = {}, 0, {0, 0, 0}
  local seen_ttl = string.format('%d', A[o + 3]) -- sent as digits: Redis formats a number slower
  for i = 3, #K do
    if redis.call('SET', K[i], '1', 'NX', 'EX', seen_ttl) then
      local at = 3 + (i - 3) * 3
      requests = requests + 1
      for f = 1, 3 do
        local amount = A[o + at + f]
        if type(amount) == 'number' and sums[f] + amount < EXACT then
          sums[f] = sums[f] + amount
        else
          add(K, NAMES[f], amount)
        end
      end
      counted[#counted + 1] = 1
    else
      counted[#counted + 1] = 0
    end
  end
  if requests > 0 then
    add(K, 'requests', requests)
    for f = 1, 3 do
      if sums[f] > 0 then add(K, NAMES[f], sums[f]) end
    end
    for hash = 1, 2 do redis.call('EXPIRE', K[hash], string.format('%d', A[o + hash])) end
  end
  return counted
end

-- ARGV[1]: the operations as one flat msgpack array (see sentinel/redis_io/functions.py):
-- each its first key's index, its number of keys, its number of fields, then the fields.
redis.register_function('@NAME@', function(keys, args)
  local A, replies, at = cmsgpack.unpack(args[1]), {}, 1
  while A[at] do
    local first, size = A[at], A[at + 2]
    replies[#replies + 1] = count({unpack(keys, first, first + A[at + 1] - 1)}, A, at + 2)
    at = at + 3 + size
  end
  return replies
end)
