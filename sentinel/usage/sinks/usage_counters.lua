-- Count one request's usage into its key's minute and day hashes, at most once per request id.
--
-- KEYS[1]  dedupe marker   sentinel:{<key>}:usage:seen:<request_id>
-- KEYS[2]  minute hash     sentinel:{<key>}:usage:m:<yyyymmddHHMM>
-- KEYS[3]  day hash        sentinel:{<key>}:usage:d:<yyyymmdd>
-- ARGV[1]  six integers joined by single spaces (one argument is cheaper to send than six):
--   1 prompt tokens, 2 completion tokens, 3 total tokens (each >= 0),
--   4 minute hash TTL, 5 day hash TTL, 6 dedupe marker TTL (seconds)
-- Returns 1 when counted, 0 when this request id was already counted (a replay).
-- Every key shares the {<key>} hash tag, so the script is valid on Redis Cluster.

local ARGV = (function(packed)
  local fields = {}
  for field in string.gmatch(packed, '%d+') do fields[#fields + 1] = field end
  return fields
end)(ARGV[1])

if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[6]) then
  return 0
end
for i = 2, 3 do
  redis.call('HINCRBY', KEYS[i], 'requests', 1)
  redis.call('HINCRBY', KEYS[i], 'prompt_tokens', ARGV[1])
  redis.call('HINCRBY', KEYS[i], 'completion_tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[i], 'total_tokens', ARGV[3])
  redis.call('EXPIRE', KEYS[i], ARGV[i + 2])
end
return 1
